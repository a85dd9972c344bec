/*
 * Selection geometry and shape arithmetic as pure host functions (no CUDA, no TensorRT calls).
 *
 * Mirrors plugins/geometry.py (`selection_geometry`) and HIVTPConfig.global_quota exactly; the host
 * tests compare against values produced by the Python reference (tests/data/plugin_geometry_cases.json).
 * Legend: P patches = h * w, R regions, W windows, Kmax static output width.
 */
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hivtp
{

//! Select's hyper-parameters (the plugin fields minus the grid). budget == 0 encodes None (paper mode).
struct SelectParams
{
    std::array<int32_t, 2> regions{2, 2};
    double globalRatio{0.25};
    int32_t window{2};
    int32_t budget{0};

    bool paperMode() const
    {
        return budget == 0;
    }
};

//! (row0, row1, col0, col1) of one region or window, half-open.
struct Span
{
    int32_t r0, r1, c0, c1;
};

struct Geometry
{
    int32_t h{}, w{};
    std::vector<int32_t> regionOf;    // [P] region id per patch, row-major patch order
    std::vector<int32_t> regionStart; // [R] offset of each region in region-major patch order
    std::vector<int32_t> regionQuota; // [R] tokens the global stage keeps per region
    std::vector<int32_t> windowOf;    // [P] window id per patch, ids unique across regions
    int32_t numWindows{};             // W
    int32_t numGlobal{};              // sum of regionQuota
    int32_t kmax{};                   // paper: numGlobal + W; budget: min(budget, P)
};

//! floor(i * size / parts), i = 0..parts, with parts capped by size.
std::vector<int32_t> splitPoints(int32_t size, int32_t parts);

std::vector<Span> regionSpans(int32_t h, int32_t w, std::array<int32_t, 2> regions);

//! Tokens the global stage keeps in one region (HIVTPConfig.global_quota).
int32_t globalQuota(SelectParams const& params, int32_t regionSize, int32_t numRegions);

//! Smallest n whose near-equal split yields at least kLocal windows over all regions.
int32_t budgetWindowCount(std::vector<Span> const& spans, int32_t kLocal);

//! The full geometry of a h x w grid; throws PluginError on a bad grid or parameters.
Geometry selectionGeometry(int32_t h, int32_t w, SelectParams const& params);

//! Static output width of Select (= selectionGeometry(h, w, params).kmax).
int32_t selectKmax(int32_t h, int32_t w, SelectParams const& params);

//! (side, side) for a square P; throws PluginError when P is not a positive perfect square.
std::pair<int32_t, int32_t> squareGrid(int64_t numPatches);

//! The grid to use: (gridH, gridW) when both > 0 (checked against P when P >= 0), else square from P.
std::pair<int32_t, int32_t> resolveGrid(int32_t gridH, int32_t gridW, int64_t numPatches);

//! The double an exporter most likely meant by a float32 attribute: the shortest decimal that
//! rounds to `value` (0.29f -> 0.29, not 0.28999999165534973), so quotas match the Python reference.
double widenFloat32(float value);

//! ceil(a / b) for a >= 0, b > 0.
int64_t ceilDiv(int64_t a, int64_t b);

} // namespace hivtp

#include "hivtpGeometry.h"

#include "hivtpCommon.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace hivtp
{
namespace
{
//! Fixed step x step windows from the region origin; a partial window at a far edge counts.
void appendTiles(Span const& s, int32_t step, std::vector<Span>& out)
{
    std::vector<int32_t> rows, cols;
    for (int32_t r = s.r0; r < s.r1; r += step)
        rows.push_back(r);
    rows.push_back(s.r1);
    for (int32_t c = s.c0; c < s.c1; c += step)
        cols.push_back(c);
    cols.push_back(s.c1);
    for (size_t i = 0; i + 1 < rows.size(); ++i)
        for (size_t j = 0; j + 1 < cols.size(); ++j)
            out.push_back({rows[i], rows[i + 1], cols[j], cols[j + 1]});
}

//! min(n, rows) x min(n, cols) near-equal windows of one region.
void appendNearEqual(Span const& s, int32_t n, std::vector<Span>& out)
{
    std::vector<int32_t> rows = splitPoints(s.r1 - s.r0, n);
    std::vector<int32_t> cols = splitPoints(s.c1 - s.c0, n);
    for (size_t i = 0; i + 1 < rows.size(); ++i)
        for (size_t j = 0; j + 1 < cols.size(); ++j)
            out.push_back({s.r0 + rows[i], s.r0 + rows[i + 1], s.c0 + cols[j], s.c0 + cols[j + 1]});
}

int32_t area(Span const& s)
{
    return (s.r1 - s.r0) * (s.c1 - s.c0);
}

void fill(std::vector<int32_t>& map, int32_t w, Span const& s, int32_t id)
{
    for (int32_t r = s.r0; r < s.r1; ++r)
        for (int32_t c = s.c0; c < s.c1; ++c)
            map[static_cast<size_t>(r) * w + c] = id;
}

void validate(int32_t h, int32_t w, SelectParams const& p)
{
    HIVTP_VALIDATE(h > 0 && w > 0, "grid must be two positive sides, got " << h << "x" << w);
    HIVTP_VALIDATE(static_cast<int64_t>(h) * w <= (int64_t{1} << 30), "grid " << h << "x" << w << " is too large");
    HIVTP_VALIDATE(p.regions[0] > 0 && p.regions[1] > 0,
        "regions must be two positive ints, got (" << p.regions[0] << ", " << p.regions[1] << ")");
    HIVTP_VALIDATE(std::isfinite(p.globalRatio) && p.globalRatio >= 0.0 && p.globalRatio <= 1.0,
        "global_ratio must be a number in [0, 1], got " << p.globalRatio);
    HIVTP_VALIDATE(p.window > 0, "window must be a positive int, got " << p.window);
    HIVTP_VALIDATE(p.budget >= 0, "budget must be >= 0 (0 = None, paper mode), got " << p.budget);
}
} // namespace

std::vector<int32_t> splitPoints(int32_t size, int32_t parts)
{
    parts = std::min(parts, size);
    std::vector<int32_t> points;
    for (int32_t i = 0; i <= parts; ++i)
        points.push_back(static_cast<int32_t>(static_cast<int64_t>(i) * size / parts));
    return points;
}

std::vector<Span> regionSpans(int32_t h, int32_t w, std::array<int32_t, 2> regions)
{
    std::vector<int32_t> rows = splitPoints(h, regions[0]);
    std::vector<int32_t> cols = splitPoints(w, regions[1]);
    std::vector<Span> spans;
    for (size_t i = 0; i + 1 < rows.size(); ++i)
        for (size_t j = 0; j + 1 < cols.size(); ++j)
            spans.push_back({rows[i], rows[i + 1], cols[j], cols[j + 1]});
    return spans;
}

int32_t globalQuota(SelectParams const& params, int32_t regionSize, int32_t numRegions)
{
    if (params.paperMode())
    {
        // Python: floor(round(ratio * size, 9)); the rounding guards 0.29 * 100 = 28.999999999999996.
        double const scaled = params.globalRatio * regionSize;
        return static_cast<int32_t>(std::floor(std::nearbyint(scaled * 1e9) / 1e9));
    }
    return std::min(params.budget / (2 * numRegions), regionSize);
}

int32_t budgetWindowCount(std::vector<Span> const& spans, int32_t kLocal)
{
    int32_t largest = 0;
    for (Span const& s : spans)
        largest = std::max({largest, s.r1 - s.r0, s.c1 - s.c0});
    for (int32_t n = 1; n <= largest; ++n)
    {
        int64_t windows = 0;
        for (Span const& s : spans)
            windows += static_cast<int64_t>(std::min(n, s.r1 - s.r0)) * std::min(n, s.c1 - s.c0);
        if (windows >= kLocal)
            return n;
    }
    return largest; // every patch is its own window: at least P >= kLocal windows
}

Geometry selectionGeometry(int32_t h, int32_t w, SelectParams const& params)
{
    validate(h, w, params);
    int32_t const numPatches = h * w;
    std::vector<Span> const spans = regionSpans(h, w, params.regions);
    int32_t const numRegions = static_cast<int32_t>(spans.size());

    Geometry g;
    g.h = h;
    g.w = w;
    int32_t start = 0;
    for (Span const& s : spans)
    {
        g.regionStart.push_back(start);
        g.regionQuota.push_back(globalQuota(params, area(s), numRegions));
        g.numGlobal += g.regionQuota.back();
        start += area(s);
    }

    std::vector<Span> windows;
    if (params.paperMode())
    {
        for (Span const& s : spans)
            appendTiles(s, params.window, windows);
        g.kmax = g.numGlobal + static_cast<int32_t>(windows.size());
    }
    else
    {
        int32_t const k = std::min(params.budget, numPatches);
        int32_t const n = budgetWindowCount(spans, k - g.numGlobal);
        for (Span const& s : spans)
            appendNearEqual(s, n, windows);
        g.kmax = k;
    }
    g.numWindows = static_cast<int32_t>(windows.size());

    g.regionOf.assign(numPatches, -1);
    g.windowOf.assign(numPatches, -1);
    for (int32_t r = 0; r < numRegions; ++r)
        fill(g.regionOf, w, spans[r], r);
    for (int32_t i = 0; i < g.numWindows; ++i)
        fill(g.windowOf, w, windows[i], i);
    return g;
}

int32_t selectKmax(int32_t h, int32_t w, SelectParams const& params)
{
    return selectionGeometry(h, w, params).kmax;
}

std::pair<int32_t, int32_t> squareGrid(int64_t numPatches)
{
    HIVTP_VALIDATE(numPatches > 0 && numPatches <= (int64_t{1} << 30),
        "cannot derive a square grid from P = " << numPatches << " patches");
    auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(numPatches))));
    while (side * side > numPatches)
        --side;
    while ((side + 1) * (side + 1) <= numPatches)
        ++side;
    HIVTP_VALIDATE(side * side == numPatches,
        "P = " << numPatches << " patches is not a square grid; set grid_h and grid_w");
    return {static_cast<int32_t>(side), static_cast<int32_t>(side)};
}

std::pair<int32_t, int32_t> resolveGrid(int32_t gridH, int32_t gridW, int64_t numPatches)
{
    HIVTP_VALIDATE(gridH >= 0 && gridW >= 0 && (gridH > 0) == (gridW > 0),
        "grid_h and grid_w must both be > 0, or both 0 (square grid from P), got " << gridH << " and " << gridW);
    if (gridH == 0)
        return squareGrid(numPatches);
    HIVTP_VALIDATE(numPatches < 0 || numPatches == static_cast<int64_t>(gridH) * gridW,
        "scores/features have P = " << numPatches << " patches but grid_h x grid_w = " << gridH << "x" << gridW);
    return {gridH, gridW};
}

double widenFloat32(float value)
{
    if (!std::isfinite(value))
        return static_cast<double>(value);
    char text[32];
    for (int digits = 1; digits <= 9; ++digits)
    {
        std::snprintf(text, sizeof(text), "%.*g", digits, static_cast<double>(value));
        double const candidate = std::strtod(text, nullptr);
        if (static_cast<float>(candidate) == value)
            return candidate;
    }
    return static_cast<double>(value);
}

int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

} // namespace hivtp

/*
 * The launch contract of plugins/kernels/{score,select}.py on the C++ side: which compiled variant
 * serves a shape, the launch grids, the workspace, and the named arguments. The grid/workspace
 * arithmetic is pure (unit-tested on the host); the launchers only fill KernelArgs and launch.
 * Legend: L score layers, B batch, H heads, N = 1 + P tokens, d head dim, P patches, D feature width,
 * M = ceil(N / BLOCK_M) row blocks, R = L * H * M partial rows per image (each P = N - 1 columns), Kmax static
 * output width.
 */
#pragma once

#include "hivtpGeometry.h"
#include "hivtpKernels.h"

#include "NvInferRuntime.h"

#include <cstdint>

namespace hivtp
{

// aot.py contract names (CompiledKernel.kernel).
constexpr char const* kSCORE_KERNEL = "score";
constexpr char const* kSCORE_REDUCE_KERNEL = "score_reduce";
constexpr char const* kSELECT_KERNEL = "select";
constexpr char const* kGATHER_KERNEL = "gather";

//! What a launcher below implements for one aot.py contract: its grid formula and runtime arguments.
struct LauncherContract
{
    char const* kernel;
    char const* grid;
    std::vector<std::string> args;
};
std::vector<LauncherContract> const& launcherContracts();

//! Throw unless `entry` is a kernel a launcher implements, with the same grid formula and argument names.
void checkContract(KernelEntry const& entry);

//! kernelsForCurrentDevice(families), each loaded kernel checked with checkContract (plugin creation).
std::shared_ptr<DeviceKernels const> loadKernels(std::vector<std::string> const& families);

//! Triton's name of a TensorRT type ("fp16", "bf16", "fp32", "i32"), nullptr for others.
char const* tritonType(nvinfer1::DataType type);

//! Row-major strides (in elements) of a contiguous tensor.
std::array<int64_t, 8> contiguousStrides(nvinfer1::Dims const& dims);

//! Bytes rounded up to 256 (TensorRT aligns workspace and the sub-buffers carved from it).
int64_t align256(int64_t bytes);

struct ScorePlan
{
    int64_t rowBlocks{};      // M
    int64_t partialRows{};    // R = L * H * M: one partial row per (layer, head, row block) of an image
    dim3 grid{1, 1, 1};       // score_kernel: (M, L * H, B)
    dim3 reduceGrid{1, 1, 1}; // score_reduce_kernel: (ceil(P / BLOCK), B)
    int64_t workspaceBytes{}; // partials [B, L * H * M, P] fp32
};

//! Pure: the launch of one Score call; throws on shapes the kernels refuse (N < 2, grid limits,
//! partials beyond the kernels' int32 offsets).
ScorePlan planScore(int64_t L, int64_t B, int64_t H, int64_t N, int64_t blockM, int64_t blockReduce);

//! Workspace layout and grids of one Select call. select_kernel writes indices/counts in the type it
//! was compiled with; when that is int64 they go to the workspace and are narrowed into the int32
//! outputs with a strided copy (low 4 bytes of each little-endian int64; -1 stays -1).
struct SelectPlan
{
    dim3 grid{1, 1, 1};       // select_kernel: (B, 1, 1)
    dim3 gatherGrid{1, 1, 1}; // gather_kernel: (cdiv(Kmax, BLOCK_K), cdiv(D, BLOCK_D), B)
    int64_t indicesOffset{-1}; // workspace offset of indices [B, Kmax], -1: written straight to the output
    int64_t countsOffset{-1};  // workspace offset of counts [B], -1: written straight to the output
    int64_t stagesOffset{};    // workspace offset of stages [B, Kmax] (never a plugin output)
    int64_t workspaceBytes{};
};

//! Pure: the launch of one Select call; element sizes in bytes as compiled (4 or 8).
SelectPlan planSelect(int64_t B, int64_t kmax, int64_t D, int64_t blockK, int64_t blockD, int64_t indexBytes,
    int64_t countBytes, int64_t stageBytes);

//! Variant of score_kernel for (dtype, N, d): HEAD_DIM == d, any 2 <= N <= 4097 (key tiles are streamed); or
//! nullptr. N < 0 or d < 0 (unknown at format time) match any value.
LoadedKernel const* pickScore(DeviceKernels const& kernels, nvinfer1::DataType type, int64_t N, int64_t d);
LoadedKernel const* pickScoreReduce(DeviceKernels const& kernels);
//! Smallest BLOCK_M among the score variants for (dtype, d): sizes the workspace for every N; -1 if none.
int64_t minScoreBlockM(DeviceKernels const& kernels, nvinfer1::DataType type, int64_t d);
//! Variant of select_kernel for P patches (P < 0: any): the smallest BLOCK_P >= P; or nullptr.
LoadedKernel const* pickSelect(DeviceKernels const& kernels, int64_t P);
//! Variant of gather_kernel that copies features of `type` (by bit width: fp16/bf16 -> i16, fp32 -> i32).
LoadedKernel const* pickGather(DeviceKernels const& kernels, nvinfer1::DataType type);

//! Bytes of the element a pointer argument was compiled for ("*i64" -> 8); throws when absent.
int64_t pointeeBytes(KernelEntry const& entry, char const* arg);

//! Device copies of a Geometry's int32 tables, in one allocation (freed with the last owner).
struct DeviceGeometry
{
    Geometry host;
    std::vector<int32_t> windowStart; // [W] offset of each window in window-major patch order
    int32_t* base{};
    int32_t* regionOf{};
    int32_t* regionStart{};
    int32_t* regionQuota{};
    int32_t* windowOf{};
    int32_t* windowStartDev{};
    ~DeviceGeometry();
};

//! The five int32 tables in one buffer, each starting at a multiple of 64 elements (256 bytes): the
//! kernels are compiled with 16-byte-aligned pointers. offsets: regionOf, regionStart, regionQuota,
//! windowOf, windowStart (in elements).
struct PackedGeometry
{
    std::vector<int32_t> values;
    std::array<size_t, 5> offsets{};
};
PackedGeometry packGeometry(Geometry const& geometry, std::vector<int32_t> const& windowStart);

//! [W] exclusive prefix sum of window sizes (what select_kernel reads as window_start).
std::vector<int32_t> windowStarts(Geometry const& geometry);

//! Upload (cached per device and geometry, outside enqueue) the tables select_kernel reads.
std::shared_ptr<DeviceGeometry const> deviceGeometry(int32_t gridH, int32_t gridW, SelectParams const& params);

struct ScoreLaunch
{
    nvinfer1::Dims qDims; // [L, B, H, N, d]
    void const* queries;
    void const* keys;
    float* scores; // [B, P]
    void* workspace;
};
//! Launch score_kernel then score_reduce_kernel; returns the first CUDA error (or throws on a contract mismatch).
cudaError_t launchScore(LoadedKernel const& main, LoadedKernel const& reduce, ScoreLaunch const& a, cudaStream_t stream);

struct SelectLaunch
{
    int64_t B, P, D, kmax;
    bool budget;
    DeviceGeometry const* geometry;
    float const* scores;  // [B, P]
    void const* features; // [B, P, D]
    void* gathered;       // [B, Kmax, D]
    int32_t* counts;      // [B]
    int32_t* indices;     // [B, Kmax]
    void* workspace;      // SelectPlan layout
};
//! Launch select_kernel, gather_kernel and the int64 -> int32 narrowing copies when needed.
cudaError_t launchSelect(
    LoadedKernel const& select, LoadedKernel const& gather, SelectLaunch const& a, cudaStream_t stream);

//! The SelectPlan of these two kernels.
SelectPlan planSelectFor(KernelEntry const& select, KernelEntry const& gather, int64_t B, int64_t kmax, int64_t D);

} // namespace hivtp

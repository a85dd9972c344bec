/*
 * Cubin launcher: picks the table entry for a device, loads it once per device with the CUDA
 * runtime library API (cudaLibraryLoadData / cudaLibraryGetKernel) and launches it with
 * cudaLaunchKernel. Loading happens at plugin creation (never in enqueue) and is shared by every
 * plugin instance and clone through a process-wide per-device cache.
 */
#pragma once

#include "hivtpKernelTable.h"

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hivtp
{

//! Does code built for `arch` run on a device of compute capability major.minor?
//! "sm_XY": same major, minor >= Y; "sm_XYf": same; "sm_XYa": exactly X.Y;
//! "compute_XY" (PTX, JIT-compiled at load): any cc >= X.Y.
bool archRunsOn(char const* arch, int32_t ccMajor, int32_t ccMinor);

//! The best entry of `variant` for the device: a cubin (the highest compatible minor, "a" first), else PTX.
KernelEntry const* selectEntry(KernelTable const& table, std::string const& variant, int32_t ccMajor, int32_t ccMinor);

//! Archs the table holds for kernel `family` (aot.py contract name), for error messages.
std::string archsOf(KernelTable const& table, std::string const& family);

//! Throw unless the entry's runtime arguments are exactly `expected` (names, any order).
void checkArgNames(KernelEntry const& entry, std::vector<std::string> const& expected);

//! Triton type of argument `name` ("*fp16"), or nullptr when the entry has no such argument.
char const* argType(KernelEntry const& entry, char const* name);

//! Value of constexpr `name`, or `fallback` when the entry does not record it.
int64_t constexprValue(KernelEntry const& entry, char const* name, int64_t fallback);

//! One loaded kernel: the entry (launch metadata) plus the device handle.
struct LoadedKernel
{
    KernelEntry const* entry{};
    cudaKernel_t handle{};
};

//! Every table variant that runs on one device (its best arch each), loaded once per device.
struct DeviceKernels
{
    int32_t device{};
    int32_t ccMajor{}, ccMinor{};
    std::vector<LoadedKernel> kernels;

    //! Loaded variants of one kernel (aot.py contract name: "score", "select"...).
    std::vector<LoadedKernel const*> family(char const* kernel) const;
};

//! Hooks that replace the CUDA calls in host tests (no GPU): set by tests only.
//! Every CUDA call the plugins make goes through currentDevice / loadEntry / launch / copy2DAsync /
//! deviceAlloc / deviceFree below, so host tests can run creation and enqueue without a GPU.
struct CudaHooks
{
    std::function<std::array<int32_t, 3>()> currentDevice; // {device, ccMajor, ccMinor}
    std::function<cudaKernel_t(KernelEntry const&, int32_t device)> load;
    std::function<cudaError_t(LoadedKernel const&, dim3 grid, dim3 block, void** args, size_t shared, cudaStream_t)>
        launch;
    std::function<cudaError_t(void* dst, size_t dpitch, void const* src, size_t spitch, size_t width, size_t height,
        cudaStream_t)>
        copy2D;
    std::function<void*(void const* host, size_t bytes)> upload; // allocate device memory holding `host`
    std::function<void(void*)> free;
};
void setCudaHooksForTesting(CudaHooks const* hooks);

//! cudaMemcpy2DAsync device to device (hooked in tests).
cudaError_t copy2DAsync(
    void* dst, size_t dpitch, void const* src, size_t spitch, size_t width, size_t height, cudaStream_t stream);

//! cudaMalloc + cudaMemcpy of `bytes` host bytes (synchronous, never in enqueue); throws on failure.
void* uploadToDevice(void const* host, size_t bytes);
//! cudaFree, logging (not throwing) a failure.
void freeDevice(void* ptr) noexcept;

//! {device, ccMajor, ccMinor} of the current CUDA device; throws with the CUDA error when none.
std::array<int32_t, 3> currentDevice();

//! Load (once per device, cached process-wide, shared by every plugin and clone) all variants of
//! `families` that run on the current device. Throws a clear error naming the device and the archs
//! the table holds when a family has no cubin for this compute capability.
std::shared_ptr<DeviceKernels const> kernelsForCurrentDevice(std::vector<std::string> const& families);

//! Runtime arguments of one launch, set by name and laid out in the entry's parameter order.
//! Integers are written in the kind the kernel was compiled with (i32 range-checked); an argument the
//! compile specialised as a constexpr must be given the value it was compiled for.
class KernelArgs
{
public:
    explicit KernelArgs(KernelEntry const& entry);
    KernelArgs& ptr(char const* name, void const* value);
    KernelArgs& integer(char const* name, int64_t value);
    KernelArgs& real(char const* name, float value);
    //! Pointers to every parameter value (hidden scratch params -> nullptr); throws if one is unset.
    void** pointers();

private:
    int32_t find(char const* name) const;
    KernelEntry const& mEntry;
    std::vector<std::array<unsigned char, 8>> mValues;
    std::vector<bool> mSet;
    std::vector<void*> mPointers;
};

//! Launch grid x block for a loaded kernel (block = numWarps * 32).
cudaError_t launch(LoadedKernel const& kernel, dim3 grid, KernelArgs& args, cudaStream_t stream);

} // namespace hivtp

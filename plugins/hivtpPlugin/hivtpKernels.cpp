#include "hivtpKernels.h"

#include "hivtpCommon.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace hivtp
{
namespace
{
struct ParsedArch
{
    int32_t major{-1}, minor{-1};
    char suffix{}; // 0, 'a' or 'f'
    bool ptx{};    // "compute_XY": PTX, JIT-compiled by the driver for any cc >= X.Y
};

ParsedArch parseArch(char const* arch)
{
    ParsedArch p;
    size_t prefix = 0;
    if (arch != nullptr && std::strncmp(arch, "sm_", 3) == 0)
        prefix = 3;
    else if (arch != nullptr && std::strncmp(arch, "compute_", 8) == 0)
        prefix = 8;
    if (prefix == 0)
        return p;
    p.ptx = prefix == 8;
    char* end = nullptr;
    long const number = std::strtol(arch + prefix, &end, 10);
    if (end == arch + prefix || number < 10 || (p.ptx && *end != 0))
        return p;
    p.major = static_cast<int32_t>(number / 10);
    p.minor = static_cast<int32_t>(number % 10);
    p.suffix = *end;
    if ((p.suffix != 0 && p.suffix != 'a' && p.suffix != 'f') || (p.suffix != 0 && end[1] != 0))
        p.major = -1;
    return p;
}

CudaHooks const* gHooks{nullptr};

cudaKernel_t loadEntry(KernelEntry const& entry, int32_t device)
{
    if (gHooks != nullptr && gHooks->load)
        return gHooks->load(entry, device);
    // A library is context-independent; it is never unloaded (process lifetime), because unloading
    // from a static destructor can run after the CUDA runtime has been torn down.
    cudaLibrary_t library{};
    HIVTP_CUDA_CHECK(cudaLibraryLoadData(&library, entry.cubin, nullptr, nullptr, 0, nullptr, nullptr, 0));
    cudaKernel_t kernel{};
    HIVTP_CUDA_CHECK(cudaLibraryGetKernel(&kernel, library, entry.kernelName));
    if (entry.sharedBytes > 48 * 1024)
    {
        HIVTP_CUDA_CHECK(cudaKernelSetAttributeForDevice(
            kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, entry.sharedBytes, device));
    }
    return kernel;
}

} // namespace

bool archRunsOn(char const* arch, int32_t ccMajor, int32_t ccMinor)
{
    ParsedArch const p = parseArch(arch);
    if (p.major < 0)
        return false;
    if (p.ptx)
        return ccMajor > p.major || (ccMajor == p.major && ccMinor >= p.minor);
    if (p.major != ccMajor)
        return false;
    return p.suffix == 'a' ? p.minor == ccMinor : p.minor <= ccMinor;
}

KernelEntry const* selectEntry(KernelTable const& table, std::string const& variant, int32_t ccMajor, int32_t ccMinor)
{
    KernelEntry const* best = nullptr;
    int32_t bestScore = -1;
    for (int32_t i = 0; i < table.count; ++i)
    {
        KernelEntry const& e = table.entries[i];
        if (variant != e.variant || !archRunsOn(e.arch, ccMajor, ccMinor))
            continue;
        ParsedArch const p = parseArch(e.arch);
        // any cubin of the device's major beats PTX (no JIT); then the closest minor, then a > f > plain
        int32_t const score = (p.ptx ? 0 : 1000) + p.major * 40 + p.minor * 4 + (p.suffix == 'a' ? 2 : p.suffix == 'f' ? 1 : 0);
        if (score > bestScore)
        {
            best = &e;
            bestScore = score;
        }
    }
    return best;
}

std::string archsOf(KernelTable const& table, std::string const& family)
{
    std::string archs;
    for (int32_t i = 0; i < table.count; ++i)
    {
        if (family == table.entries[i].kernel)
            archs += (archs.empty() ? "" : ", ") + std::string(table.entries[i].arch);
    }
    return archs.empty() ? "none" : archs;
}

char const* argType(KernelEntry const& entry, char const* name)
{
    for (int32_t i = 0; i < entry.numArgs; ++i)
    {
        if (std::strcmp(entry.args[i].name, name) == 0)
            return entry.args[i].type;
    }
    return nullptr;
}

int64_t constexprValue(KernelEntry const& entry, char const* name, int64_t fallback)
{
    for (int32_t i = 0; i < entry.numConstexprs; ++i)
    {
        if (std::strcmp(entry.constexprs[i].name, name) == 0)
            return entry.constexprs[i].value;
    }
    return fallback;
}

void checkArgNames(KernelEntry const& entry, std::vector<std::string> const& expected)
{
    std::string have, want;
    bool same = static_cast<size_t>(entry.numArgs) == expected.size();
    for (int32_t i = 0; i < entry.numArgs; ++i)
    {
        have += (i ? ", " : "") + std::string(entry.args[i].name);
        bool found = false;
        for (auto const& name : expected)
            found = found || name == entry.args[i].name;
        same = same && found;
    }
    for (size_t i = 0; i < expected.size(); ++i)
        want += (i ? ", " : "") + expected[i];
    HIVTP_VALIDATE(same,
        "kernel " << entry.variant << " (" << entry.kernelName << ") takes (" << have << ") but the launcher sets ("
                  << want << "): kernels/*.py and the plugin launcher disagree; regenerate and update the launcher");
}

std::vector<LoadedKernel const*> DeviceKernels::family(char const* kernel) const
{
    std::vector<LoadedKernel const*> found;
    for (LoadedKernel const& k : kernels)
    {
        if (std::strcmp(k.entry->kernel, kernel) == 0)
            found.push_back(&k);
    }
    return found;
}

void setCudaHooksForTesting(CudaHooks const* hooks)
{
    gHooks = hooks;
}

cudaError_t copy2DAsync(
    void* dst, size_t dpitch, void const* src, size_t spitch, size_t width, size_t height, cudaStream_t stream)
{
    if (gHooks != nullptr && gHooks->copy2D)
        return gHooks->copy2D(dst, dpitch, src, spitch, width, height, stream);
    return cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, stream);
}

void* uploadToDevice(void const* host, size_t bytes)
{
    if (gHooks != nullptr && gHooks->upload)
        return gHooks->upload(host, bytes);
    void* ptr = nullptr;
    HIVTP_CUDA_CHECK(cudaMalloc(&ptr, bytes));
    cudaError_t const status = cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice);
    if (status != cudaSuccess)
    {
        freeDevice(ptr);
        HIVTP_CUDA_CHECK(status);
    }
    return ptr;
}

void freeDevice(void* ptr) noexcept
{
    if (gHooks != nullptr && gHooks->free)
        return gHooks->free(ptr);
    cudaError_t const status = cudaFree(ptr);
    if (status != cudaSuccess)
        logWarning(std::string("cudaFree failed: ") + cudaGetErrorString(status));
}

std::array<int32_t, 3> currentDevice()
{
    if (gHooks != nullptr && gHooks->currentDevice)
        return gHooks->currentDevice();
    int device = 0, major = 0, minor = 0;
    HIVTP_CUDA_CHECK(cudaGetDevice(&device));
    HIVTP_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    HIVTP_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    return {device, major, minor};
}

std::shared_ptr<DeviceKernels const> kernelsForCurrentDevice(std::vector<std::string> const& families)
{
    static std::mutex mutex;
    static std::map<int32_t, std::shared_ptr<DeviceKernels const>> cache; // device -> every loadable kernel

    auto const [device, major, minor] = currentDevice();
    KernelTable const table = builtinKernelTable();
    std::shared_ptr<DeviceKernels const> loaded;
    {
        std::lock_guard<std::mutex> lock(mutex);
        auto& slot = cache[device];
        if (!slot)
        {
            auto kernels = std::make_shared<DeviceKernels>();
            kernels->device = device;
            kernels->ccMajor = major;
            kernels->ccMinor = minor;
            for (int32_t i = 0; i < table.count; ++i)
            {
                KernelEntry const& e = table.entries[i];
                if (selectEntry(table, e.variant, major, minor) == &e) // best arch of each variant
                    kernels->kernels.push_back(LoadedKernel{&e, loadEntry(e, device)});
            }
            slot = kernels;
        }
        loaded = slot;
    }
    for (auto const& family : families)
    {
        HIVTP_VALIDATE(!loaded->family(family.c_str()).empty(),
            "no cubin of kernel '" << family << "' for device " << device << " (compute capability " << major << "."
                                   << minor << "); this library holds it for: " << archsOf(table, family)
                                   << " (kernel table: " << table.source
                                   << "). Rebuild with HIVTP_CUDA_ARCHS including this GPU.");
    }
    return loaded;
}

KernelArgs::KernelArgs(KernelEntry const& entry)
    : mEntry(entry)
    , mValues(static_cast<size_t>(entry.numParams))
    , mSet(static_cast<size_t>(entry.numParams), false)
    , mPointers(static_cast<size_t>(entry.numParams), nullptr)
{
    for (auto& v : mValues)
        v.fill(0);
    for (int32_t i = entry.numArgs; i < entry.numParams; ++i)
        mSet[static_cast<size_t>(i)] = true; // hidden scratch pointers: nullptr (the generator checked size 0)
}

int32_t KernelArgs::find(char const* name) const
{
    for (int32_t i = 0; i < mEntry.numArgs; ++i)
    {
        if (std::strcmp(mEntry.args[i].name, name) == 0)
            return i;
    }
    return -1;
}

KernelArgs& KernelArgs::ptr(char const* name, void const* value)
{
    int32_t const i = find(name);
    HIVTP_VALIDATE(i >= 0 && mEntry.args[i].kind == ArgKind::kPTR,
        "kernel " << mEntry.variant << " has no pointer argument '" << name << "'");
    // aot.py compiles every pointer with tt.divisibility = 16: a misaligned one would be undefined behaviour.
    HIVTP_VALIDATE(reinterpret_cast<uintptr_t>(value) % 16 == 0,
        "kernel " << mEntry.variant << ": pointer '" << name << "' = " << value << " is not 16-byte aligned");
    std::memcpy(mValues[i].data(), &value, sizeof(value));
    mSet[i] = true;
    return *this;
}

KernelArgs& KernelArgs::integer(char const* name, int64_t value)
{
    int32_t const i = find(name);
    if (i < 0)
    {
        int64_t const compiled = constexprValue(mEntry, name, value + 1);
        HIVTP_VALIDATE(compiled == value,
            "kernel " << mEntry.variant << ": " << name << " = " << value << " but the cubin was compiled for "
                      << (compiled == value + 1 ? std::string("no such argument") : std::to_string(compiled)));
        return *this;
    }
    ArgKind const kind = mEntry.args[i].kind;
    if (kind == ArgKind::kI32)
    {
        HIVTP_VALIDATE(value >= INT32_MIN && value <= INT32_MAX,
            "kernel " << mEntry.variant << ": " << name << " = " << value << " overflows its i32 argument");
        auto const v = static_cast<int32_t>(value);
        std::memcpy(mValues[i].data(), &v, sizeof(v));
    }
    else
    {
        HIVTP_VALIDATE(kind == ArgKind::kI64, "kernel " << mEntry.variant << ": argument '" << name << "' is not an integer");
        std::memcpy(mValues[i].data(), &value, sizeof(value));
    }
    mSet[i] = true;
    return *this;
}

KernelArgs& KernelArgs::real(char const* name, float value)
{
    int32_t const i = find(name);
    HIVTP_VALIDATE(i >= 0 && mEntry.args[i].kind == ArgKind::kF32,
        "kernel " << mEntry.variant << " has no fp32 argument '" << name << "'");
    std::memcpy(mValues[i].data(), &value, sizeof(value));
    mSet[i] = true;
    return *this;
}

void** KernelArgs::pointers()
{
    for (size_t i = 0; i < mValues.size(); ++i)
    {
        HIVTP_VALIDATE(mSet[i], "argument '" << mEntry.args[i].name << "' of " << mEntry.variant << " was not set");
        mPointers[i] = mValues[i].data();
    }
    return mPointers.data();
}

cudaError_t launch(LoadedKernel const& kernel, dim3 grid, KernelArgs& args, cudaStream_t stream)
{
    dim3 const block(static_cast<unsigned>(kernel.entry->numWarps) * 32U);
    if (gHooks != nullptr && gHooks->launch)
        return gHooks->launch(kernel, grid, block, args.pointers(), static_cast<size_t>(kernel.entry->sharedBytes), stream);
    return cudaLaunchKernel(reinterpret_cast<void const*>(kernel.handle), grid, block, args.pointers(),
        static_cast<size_t>(kernel.entry->sharedBytes), stream);
}

} // namespace hivtp

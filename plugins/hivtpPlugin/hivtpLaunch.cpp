#include "hivtpLaunch.h"

#include "hivtpCommon.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>

namespace hivtp
{
namespace
{
using nvinfer1::DataType;

constexpr int64_t kMAX_GRID_Y = 65535;
constexpr int64_t kMAX_PATCHES = 4096; // select.py MAX_PATCHES: 12 index bits in its sort key
constexpr int64_t kMAX_TOKENS = kMAX_PATCHES + 1; // score.py MAX_TOKENS: CLS + the patches (the kernel streams any N)

bool hasPtrType(KernelEntry const& e, char const* arg, char const* elem)
{
    char const* type = argType(e, arg);
    return type != nullptr && type[0] == '*' && std::strcmp(type + 1, elem) == 0;
}

uint32_t toDim(int64_t value, char const* what)
{
    HIVTP_VALIDATE(value >= 1 && value <= 0x7fffffff, what << " = " << value << " is not a valid grid extent");
    return static_cast<uint32_t>(value);
}
} // namespace

std::vector<LauncherContract> const& launcherContracts()
{
    static std::vector<LauncherContract> const contracts{
        {kSCORE_KERNEL, "(cdiv(N, BLOCK_M), L * H, B)",
            {"q_ptr", "k_ptr", "partial_ptr", "L", "H", "N", "scale", "stride_ql", "stride_qb", "stride_qh",
                "stride_qn", "stride_kl", "stride_kb", "stride_kh", "stride_kn"}},
        {kSCORE_REDUCE_KERNEL, "(cdiv(N - 1, BLOCK), B, 1)", {"partial_ptr", "out_ptr", "R", "N", "count"}},
        {kSELECT_KERNEL, "(B, 1, 1)",
            {"scores_ptr", "region_of_ptr", "region_start_ptr", "region_quota_ptr", "window_of_ptr",
                "window_start_ptr", "indices_ptr", "counts_ptr", "stages_ptr", "P", "KMAX", "IS_BUDGET", "stride_sb"}},
        {kGATHER_KERNEL, "(cdiv(KMAX, BLOCK_K), cdiv(D, BLOCK_D), B)",
            {"features_ptr", "indices_ptr", "gathered_ptr", "D", "KMAX", "stride_fb", "stride_fp"}},
    };
    return contracts;
}

void checkContract(KernelEntry const& entry)
{
    for (LauncherContract const& c : launcherContracts())
    {
        if (std::strcmp(c.kernel, entry.kernel) != 0)
            continue;
        HIVTP_VALIDATE(std::strcmp(c.grid, entry.grid) == 0,
            "kernel " << entry.variant << ": aot.py launches it on grid " << entry.grid << " but the plugin launches "
                      << c.grid << "; update hivtpLaunch.cpp with aot.py");
        checkArgNames(entry, c.args);
        return;
    }
    throw PluginError(std::string("kernel table holds '") + entry.kernel + "' (" + entry.variant
        + "), which no plugin launcher implements");
}

std::shared_ptr<DeviceKernels const> loadKernels(std::vector<std::string> const& families)
{
    auto kernels = kernelsForCurrentDevice(families);
    for (auto const& family : families)
    {
        for (LoadedKernel const* k : kernels->family(family.c_str()))
            checkContract(*k->entry);
    }
    return kernels;
}

char const* tritonType(DataType type)
{
    switch (type)
    {
    case DataType::kHALF: return "fp16";
    case DataType::kBF16: return "bf16";
    case DataType::kFLOAT: return "fp32";
    case DataType::kINT32: return "i32";
    default: return nullptr;
    }
}

std::array<int64_t, 8> contiguousStrides(nvinfer1::Dims const& dims)
{
    std::array<int64_t, 8> strides{};
    int64_t stride = 1;
    for (int32_t i = dims.nbDims - 1; i >= 0; --i)
    {
        strides[static_cast<size_t>(i)] = stride;
        stride *= dims.d[i];
    }
    return strides;
}

int64_t align256(int64_t bytes)
{
    return (bytes + 255) / 256 * 256;
}

ScorePlan planScore(int64_t L, int64_t B, int64_t H, int64_t N, int64_t blockM, int64_t blockReduce)
{
    HIVTP_VALIDATE(N >= 2 && N <= kMAX_TOKENS, "Score needs 2 <= N <= " << kMAX_TOKENS << " tokens, got N = " << N);
    HIVTP_VALIDATE(B >= 1 && B <= kMAX_GRID_Y, "Score needs 1 <= B <= " << kMAX_GRID_Y << ", got B = " << B);
    HIVTP_VALIDATE(L >= 1 && H >= 1 && L * H <= kMAX_GRID_Y,
        "Score needs 1 <= L * H <= " << kMAX_GRID_Y << ", got L = " << L << ", H = " << H);
    HIVTP_VALIDATE(blockM > 0 && blockReduce > 0, "bad block sizes " << blockM << ", " << blockReduce);
    ScorePlan plan;
    int64_t const P = N - 1; // partial column sums cover the patches only (the CLS column is dropped)
    plan.rowBlocks = ceilDiv(N, blockM);
    plan.partialRows = L * H * plan.rowBlocks;
    HIVTP_VALIDATE(B * plan.partialRows * P < (int64_t{1} << 31),
        "Score partials [B, L * H * M, P] = [" << B << ", " << plan.partialRows << ", " << P
                                               << "] overflow the kernels' int32 offsets");
    plan.grid = dim3(toDim(plan.rowBlocks, "row blocks"), toDim(L * H, "L * H"), toDim(B, "B"));
    plan.reduceGrid = dim3(toDim(ceilDiv(P, blockReduce), "patch blocks"), toDim(B, "B"), 1);
    plan.workspaceBytes = align256(B * plan.partialRows * P * static_cast<int64_t>(sizeof(float)));
    return plan;
}

SelectPlan planSelect(int64_t B, int64_t kmax, int64_t D, int64_t blockK, int64_t blockD, int64_t indexBytes,
    int64_t countBytes, int64_t stageBytes)
{
    HIVTP_VALIDATE(B >= 1 && B <= kMAX_GRID_Y, "Select needs 1 <= B <= " << kMAX_GRID_Y << ", got B = " << B);
    HIVTP_VALIDATE(kmax >= 1 && D >= 1, "Select needs Kmax >= 1 and D >= 1, got " << kmax << " and " << D);
    HIVTP_VALIDATE(blockK > 0 && blockD > 0, "bad gather blocks " << blockK << ", " << blockD);
    SelectPlan plan;
    plan.grid = dim3(toDim(B, "B"), 1, 1);
    plan.gatherGrid = dim3(toDim(ceilDiv(kmax, blockK), "slot blocks"), toDim(ceilDiv(D, blockD), "column blocks"),
        toDim(B, "B"));
    int64_t offset = 0;
    if (indexBytes != 4)
    {
        plan.indicesOffset = offset;
        offset += align256(B * kmax * indexBytes);
    }
    if (countBytes != 4)
    {
        plan.countsOffset = offset;
        offset += align256(B * countBytes);
    }
    plan.stagesOffset = offset;
    plan.workspaceBytes = offset + align256(B * kmax * stageBytes);
    return plan;
}

LoadedKernel const* pickScore(DeviceKernels const& kernels, DataType type, int64_t N, int64_t d)
{
    char const* elem = tritonType(type);
    if (elem == nullptr || type == DataType::kINT32)
        return nullptr;
    if (N >= 0 && (N < 2 || N > kMAX_TOKENS))
        return nullptr;
    for (LoadedKernel const* k : kernels.family(kSCORE_KERNEL))
    {
        KernelEntry const& e = *k->entry;
        bool const fits = hasPtrType(e, "q_ptr", elem) && hasPtrType(e, "k_ptr", elem)
            && (d < 0 || constexprValue(e, "HEAD_DIM", -1) == d);
        if (fits) // the kernel streams key tiles: one variant per (type, head dim) serves every N
            return k;
    }
    return nullptr;
}

int64_t minScoreBlockM(DeviceKernels const& kernels, DataType type, int64_t d)
{
    char const* elem = tritonType(type);
    int64_t best = -1;
    for (LoadedKernel const* k : kernels.family(kSCORE_KERNEL))
    {
        KernelEntry const& e = *k->entry;
        int64_t const blockM = constexprValue(e, "BLOCK_M", -1);
        bool const serves = elem != nullptr && hasPtrType(e, "q_ptr", elem) && constexprValue(e, "HEAD_DIM", -1) == d;
        if (serves && blockM > 0 && (best < 0 || blockM < best))
            best = blockM;
    }
    return best;
}

LoadedKernel const* pickScoreReduce(DeviceKernels const& kernels)
{
    auto const found = kernels.family(kSCORE_REDUCE_KERNEL);
    return found.empty() ? nullptr : found.front();
}

LoadedKernel const* pickSelect(DeviceKernels const& kernels, int64_t P)
{
    LoadedKernel const* best = nullptr;
    for (LoadedKernel const* k : kernels.family(kSELECT_KERNEL))
    {
        KernelEntry const& e = *k->entry;
        int64_t const blockP = constexprValue(e, "BLOCK_P", -1);
        bool const fits = hasPtrType(e, "scores_ptr", "fp32") && (P < 0 || blockP >= P);
        if (fits && (best == nullptr || blockP < constexprValue(*best->entry, "BLOCK_P", -1)))
            best = k;
    }
    return best;
}

LoadedKernel const* pickGather(DeviceKernels const& kernels, DataType type)
{
    char const* exact = tritonType(type);
    char const* bits = type == DataType::kFLOAT ? "i32" : type == DataType::kHALF || type == DataType::kBF16 ? "i16" : nullptr;
    if (exact == nullptr || bits == nullptr)
        return nullptr;
    for (LoadedKernel const* k : kernels.family(kGATHER_KERNEL))
    {
        KernelEntry const& e = *k->entry;
        char const* in = argType(e, "features_ptr");
        char const* out = argType(e, "gathered_ptr");
        bool const copies = hasPtrType(e, "features_ptr", bits) || hasPtrType(e, "features_ptr", exact);
        if (copies && in != nullptr && out != nullptr && std::strcmp(in, out) == 0)
            return k;
    }
    return nullptr;
}

int64_t pointeeBytes(KernelEntry const& entry, char const* arg)
{
    char const* type = argType(entry, arg);
    HIVTP_VALIDATE(type != nullptr && type[0] == '*', "kernel " << entry.variant << " has no pointer argument " << arg);
    std::string const elem = type + 1;
    if (elem == "i64" || elem == "u64" || elem == "fp64")
        return 8;
    if (elem == "i32" || elem == "u32" || elem == "fp32")
        return 4;
    if (elem == "i16" || elem == "u16" || elem == "fp16" || elem == "bf16")
        return 2;
    HIVTP_VALIDATE(elem == "i8" || elem == "u8", "kernel " << entry.variant << ": unknown element type " << type);
    return 1;
}

std::vector<int32_t> windowStarts(Geometry const& geometry)
{
    std::vector<int32_t> sizes(static_cast<size_t>(geometry.numWindows), 0);
    for (int32_t w : geometry.windowOf)
        ++sizes[static_cast<size_t>(w)];
    std::vector<int32_t> starts(sizes.size(), 0);
    for (size_t i = 1; i < sizes.size(); ++i)
        starts[i] = starts[i - 1] + sizes[i - 1];
    return starts;
}

PackedGeometry packGeometry(Geometry const& geometry, std::vector<int32_t> const& windowStart)
{
    PackedGeometry packed;
    std::vector<int32_t> const* tables[] = {&geometry.regionOf, &geometry.regionStart, &geometry.regionQuota,
        &geometry.windowOf, &windowStart};
    for (size_t i = 0; i < 5; ++i)
    {
        packed.offsets[i] = packed.values.size();
        packed.values.insert(packed.values.end(), tables[i]->begin(), tables[i]->end());
        packed.values.resize((packed.values.size() + 63) / 64 * 64, 0); // each table starts 256-byte aligned
    }
    return packed;
}

DeviceGeometry::~DeviceGeometry()
{
    if (base != nullptr)
        freeDevice(base);
}

std::shared_ptr<DeviceGeometry const> deviceGeometry(int32_t gridH, int32_t gridW, SelectParams const& params)
{
    static std::mutex mutex;
    static std::map<std::string, std::weak_ptr<DeviceGeometry const>> cache;

    int32_t const device = currentDevice()[0];
    char key[160];
    std::snprintf(key, sizeof(key), "%d:%dx%d:%dx%d:%a:%d:%d", device, gridH, gridW, params.regions[0],
        params.regions[1], params.globalRatio, params.window, params.budget);
    std::lock_guard<std::mutex> lock(mutex);
    if (auto cached = cache[key].lock())
        return cached;

    auto geo = std::make_shared<DeviceGeometry>();
    geo->host = selectionGeometry(gridH, gridW, params);
    geo->windowStart = windowStarts(geo->host);
    PackedGeometry const packed = packGeometry(geo->host, geo->windowStart);
    geo->base = static_cast<int32_t*>(uploadToDevice(packed.values.data(), packed.values.size() * sizeof(int32_t)));
    geo->regionOf = geo->base + packed.offsets[0];
    geo->regionStart = geo->base + packed.offsets[1];
    geo->regionQuota = geo->base + packed.offsets[2];
    geo->windowOf = geo->base + packed.offsets[3];
    geo->windowStartDev = geo->base + packed.offsets[4];
    cache[key] = geo;
    return geo;
}

cudaError_t launchScore(LoadedKernel const& main, LoadedKernel const& reduce, ScoreLaunch const& a, cudaStream_t stream)
{
    nvinfer1::Dims const& q = a.qDims;
    HIVTP_VALIDATE(q.nbDims == 5, "queries must be [L, B, H, N, d], got rank " << q.nbDims);
    int64_t const L = q.d[0], B = q.d[1], H = q.d[2], N = q.d[3], d = q.d[4];
    HIVTP_VALIDATE(L * B * H * N * d < (int64_t{1} << 31), "queries have " << L * B * H * N * d
                                                                       << " elements; the kernel's offsets are int32");
    ScorePlan const plan = planScore(L, B, H, N, constexprValue(*main.entry, "BLOCK_M", -1),
        constexprValue(*reduce.entry, "BLOCK", -1));
    auto const s = contiguousStrides(q);
    KernelArgs args(*main.entry);
    args.ptr("q_ptr", a.queries).ptr("k_ptr", a.keys).ptr("partial_ptr", a.workspace);
    args.integer("L", L).integer("H", H).integer("N", N).real("scale", static_cast<float>(1.0 / std::sqrt(double(d))));
    args.integer("stride_ql", s[0]).integer("stride_qb", s[1]).integer("stride_qh", s[2]).integer("stride_qn", s[3]);
    args.integer("stride_kl", s[0]).integer("stride_kb", s[1]).integer("stride_kh", s[2]).integer("stride_kn", s[3]);
    args.integer("HEAD_DIM", d);
    cudaError_t status = launch(main, plan.grid, args, stream);
    if (status != cudaSuccess)
        return status;
    KernelArgs reduceArgs(*reduce.entry);
    reduceArgs.ptr("partial_ptr", a.workspace).ptr("out_ptr", a.scores);
    reduceArgs.integer("R", plan.partialRows).integer("N", N).real("count", static_cast<float>(L * H * N));
    return launch(reduce, plan.reduceGrid, reduceArgs, stream);
}

SelectPlan planSelectFor(KernelEntry const& select, KernelEntry const& gather, int64_t B, int64_t kmax, int64_t D)
{
    int64_t const indexBytes = pointeeBytes(select, "indices_ptr");
    HIVTP_VALIDATE(indexBytes == pointeeBytes(gather, "indices_ptr") && (indexBytes == 4 || indexBytes == 8),
        "select (" << argType(select, "indices_ptr") << ") and gather (" << argType(gather, "indices_ptr")
                   << ") must share an int32 or int64 indices type");
    int64_t const countBytes = pointeeBytes(select, "counts_ptr");
    HIVTP_VALIDATE(countBytes == 4 || countBytes == 8, "select counts must be int32 or int64");
    return planSelect(B, kmax, D, constexprValue(gather, "BLOCK_K", -1), constexprValue(gather, "BLOCK_D", -1),
        indexBytes, countBytes, pointeeBytes(select, "stages_ptr"));
}

cudaError_t launchSelect(
    LoadedKernel const& select, LoadedKernel const& gather, SelectLaunch const& a, cudaStream_t stream)
{
    HIVTP_VALIDATE(a.P >= 1 && a.P <= kMAX_PATCHES, "Select needs 1 <= P <= " << kMAX_PATCHES << ", got P = " << a.P);
    HIVTP_VALIDATE(a.geometry != nullptr, "Select geometry was not uploaded before enqueue");
    HIVTP_VALIDATE(a.B * a.P * a.D < (int64_t{1} << 31), "features have " << a.B * a.P * a.D
                                                                         << " elements; the kernels' offsets are int32");
    SelectPlan const plan = planSelectFor(*select.entry, *gather.entry, a.B, a.kmax, a.D);
    auto* ws = static_cast<char*>(a.workspace);
    void* indices = plan.indicesOffset >= 0 ? static_cast<void*>(ws + plan.indicesOffset) : a.indices;
    void* counts = plan.countsOffset >= 0 ? static_cast<void*>(ws + plan.countsOffset) : a.counts;
    DeviceGeometry const& g = *a.geometry;

    KernelArgs args(*select.entry);
    args.ptr("scores_ptr", a.scores).ptr("region_of_ptr", g.regionOf).ptr("region_start_ptr", g.regionStart);
    args.ptr("region_quota_ptr", g.regionQuota).ptr("window_of_ptr", g.windowOf).ptr("window_start_ptr", g.windowStartDev);
    args.ptr("indices_ptr", indices).ptr("counts_ptr", counts).ptr("stages_ptr", ws + plan.stagesOffset);
    args.integer("P", a.P).integer("KMAX", a.kmax).integer("IS_BUDGET", a.budget ? 1 : 0).integer("stride_sb", a.P);
    cudaError_t status = launch(select, plan.grid, args, stream);
    if (status != cudaSuccess)
        return status;

    KernelArgs gatherArgs(*gather.entry);
    gatherArgs.ptr("features_ptr", a.features).ptr("indices_ptr", indices).ptr("gathered_ptr", a.gathered);
    gatherArgs.integer("D", a.D).integer("KMAX", a.kmax).integer("stride_fb", a.P * a.D).integer("stride_fp", a.D);
    status = launch(gather, plan.gatherGrid, gatherArgs, stream);
    if (status == cudaSuccess && plan.indicesOffset >= 0) // int64 -> int32: keep the low half of each element
        status = copy2DAsync(a.indices, 4, indices, 8, 4, static_cast<size_t>(a.B * a.kmax), stream);
    if (status == cudaSuccess && plan.countsOffset >= 0)
        status = copy2DAsync(a.counts, 4, counts, 8, 4, static_cast<size_t>(a.B), stream);
    return status;
}

} // namespace hivtp

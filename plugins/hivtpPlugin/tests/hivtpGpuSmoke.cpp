/*
 * GPU smoke driver: runs Score or Select through the plugin interface exactly as TensorRT would
 * (createPlugin(kBUILD) -> configurePlugin -> getWorkspaceSize -> getFieldsToSerialize ->
 * createPlugin(kRUNTIME) -> attachToContext -> onShapeChange -> enqueue), without TensorRT, on the
 * library's real kernel table. tests/test_plugin_host.py writes the inputs and compares the outputs
 * with plugins/reference.py. Exits 77 (skip) when no CUDA device is present.
 *
 *   hivtp_gpu_smoke score  <L> <B> <H> <N> <d> <fp16|bf16|fp32> <in.bin> <out.bin>
 *       in: queries then keys, [L, B, H, N, d] each; out: scores [B, N - 1] fp32
 *   hivtp_gpu_smoke select <B> <h> <w> <D> <fp16|bf16|fp32> <rows> <cols> <ratio> <window> <budget> <in.bin> <out.bin>
 *       in: scores [B, P] fp32 then features [B, P, D]; out: int32 Kmax, selected [B, Kmax, D], counts [B] int32,
 *       indices [B, Kmax] int32
 */
#include "hivtpPlugin.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
#define SMOKE_CHECK(cond, msg)                                                                                         \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "hivtp_gpu_smoke: %s\n", msg);                                                        \
            std::exit(1);                                                                                              \
        }                                                                                                              \
    } while (0)

#define SMOKE_CUDA(call) SMOKE_CHECK((call) == cudaSuccess, #call " failed")

DataType parseType(std::string const& name)
{
    if (name == "fp16")
        return DataType::kHALF;
    if (name == "bf16")
        return DataType::kBF16;
    SMOKE_CHECK(name == "fp32", "type must be fp16, bf16 or fp32");
    return DataType::kFLOAT;
}

int64_t bytesOf(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kINT32 ? 4 : 2;
}

DynamicPluginTensorDesc desc(std::vector<int64_t> const& dims, DataType type)
{
    DynamicPluginTensorDesc d{};
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
        d.desc.dims.d[i] = dims[i];
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    d.min = d.max = d.opt = d.desc.dims;
    return d;
}

int64_t volume(DynamicPluginTensorDesc const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.desc.dims.nbDims; ++i)
        v *= d.desc.dims.d[i];
    return v;
}

struct DeviceBuffer
{
    void* ptr{};
    explicit DeviceBuffer(size_t bytes)
    {
        SMOKE_CUDA(cudaMalloc(&ptr, bytes == 0 ? 256 : bytes));
        SMOKE_CUDA(cudaMemset(ptr, 0xff, bytes == 0 ? 256 : bytes)); // garbage the plugin must overwrite
    }
    ~DeviceBuffer()
    {
        cudaFree(ptr);
    }
};

//! The TensorRT call sequence on one plugin; returns the host copies of the outputs.
std::vector<std::vector<char>> run(IPluginCreatorV3One& creator, PluginFieldCollection const& fields,
    std::vector<DynamicPluginTensorDesc> const& in, std::vector<DynamicPluginTensorDesc> const& out,
    std::vector<std::vector<char>> const& inputs)
{
    std::unique_ptr<IPluginV3> built(creator.createPlugin("smoke", &fields, TensorRTPhase::kBUILD));
    SMOKE_CHECK(built != nullptr, "createPlugin(kBUILD) failed");
    auto* build = static_cast<IPluginV3OneBuild*>(built->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto const nIn = static_cast<int32_t>(in.size()), nOut = static_cast<int32_t>(out.size());
    SMOKE_CHECK(build->configurePlugin(in.data(), nIn, out.data(), nOut) == 0, "configurePlugin failed");
    size_t const workspaceBytes = build->getWorkspaceSize(in.data(), nIn, out.data(), nOut);
    auto* builtRuntime = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* serialized = builtRuntime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> deserialized(creator.createPlugin("smoke", serialized, TensorRTPhase::kRUNTIME));
    SMOKE_CHECK(deserialized != nullptr, "createPlugin(kRUNTIME) failed");
    auto* runtime0 = static_cast<IPluginV3OneRuntime*>(deserialized->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::unique_ptr<IPluginV3> attached(runtime0->attachToContext(nullptr));
    SMOKE_CHECK(attached != nullptr, "attachToContext failed");
    auto* runtime = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));

    std::vector<PluginTensorDesc> inDesc, outDesc;
    for (auto const& d : in)
        inDesc.push_back(d.desc);
    for (auto const& d : out)
        outDesc.push_back(d.desc);
    SMOKE_CHECK(runtime->onShapeChange(inDesc.data(), nIn, outDesc.data(), nOut) == 0, "onShapeChange failed");

    std::vector<std::unique_ptr<DeviceBuffer>> inBuf, outBuf;
    std::vector<void const*> inPtr;
    std::vector<void*> outPtr;
    for (size_t i = 0; i < in.size(); ++i)
    {
        inBuf.push_back(std::make_unique<DeviceBuffer>(inputs[i].size()));
        SMOKE_CUDA(cudaMemcpy(inBuf.back()->ptr, inputs[i].data(), inputs[i].size(), cudaMemcpyHostToDevice));
        inPtr.push_back(inBuf.back()->ptr);
    }
    for (auto const& d : out)
    {
        outBuf.push_back(std::make_unique<DeviceBuffer>(static_cast<size_t>(volume(d) * bytesOf(d.desc.type))));
        outPtr.push_back(outBuf.back()->ptr);
    }
    DeviceBuffer workspace(workspaceBytes);
    cudaStream_t stream{};
    SMOKE_CUDA(cudaStreamCreate(&stream));
    SMOKE_CHECK(runtime->enqueue(inDesc.data(), outDesc.data(), inPtr.data(), outPtr.data(), workspace.ptr, stream) == 0,
        "enqueue failed");
    SMOKE_CUDA(cudaStreamSynchronize(stream));
    SMOKE_CUDA(cudaStreamDestroy(stream));
    std::vector<std::vector<char>> results;
    for (size_t i = 0; i < out.size(); ++i)
    {
        results.emplace_back(static_cast<size_t>(volume(out[i]) * bytesOf(out[i].desc.type)));
        SMOKE_CUDA(cudaMemcpy(results.back().data(), outPtr[i], results.back().size(), cudaMemcpyDeviceToHost));
    }
    return results;
}

std::vector<char> readAll(char const* path)
{
    std::ifstream f(path, std::ios::binary);
    SMOKE_CHECK(f.good(), "cannot read the input file");
    return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<char> slice(std::vector<char> const& all, size_t offset, size_t bytes)
{
    SMOKE_CHECK(offset + bytes <= all.size(), "input file too short");
    return std::vector<char>(all.begin() + static_cast<std::ptrdiff_t>(offset),
        all.begin() + static_cast<std::ptrdiff_t>(offset + bytes));
}

int runScore(char** a)
{
    int64_t const L = std::atoll(a[0]), B = std::atoll(a[1]), H = std::atoll(a[2]), N = std::atoll(a[3]),
                  d = std::atoll(a[4]);
    DataType const type = parseType(a[5]);
    std::vector<int32_t> layers;
    for (int64_t i = 0; i < L; ++i)
        layers.push_back(static_cast<int32_t>(i));
    PluginField const field("score_layers", layers.data(), PluginFieldType::kINT32, static_cast<int32_t>(L));
    PluginFieldCollection const fc{1, &field};
    std::vector<char> const all = readAll(a[6]);
    auto const bytes = static_cast<size_t>(L * B * H * N * d * bytesOf(type));
    hivtp::ScoreCreator creator;
    auto const out = run(creator, fc, {desc({L, B, H, N, d}, type), desc({L, B, H, N, d}, type)},
        {desc({B, N - 1}, DataType::kFLOAT)}, {slice(all, 0, bytes), slice(all, bytes, bytes)});
    std::ofstream(a[7], std::ios::binary).write(out[0].data(), static_cast<std::streamsize>(out[0].size()));
    return 0;
}

int runSelect(char** a)
{
    int64_t const B = std::atoll(a[0]), h = std::atoll(a[1]), w = std::atoll(a[2]), D = std::atoll(a[3]);
    int64_t const P = h * w;
    DataType const type = parseType(a[4]);
    int32_t const ints[] = {std::atoi(a[5]), std::atoi(a[6]), std::atoi(a[8]), std::atoi(a[9]),
        static_cast<int32_t>(h), static_cast<int32_t>(w)};
    float const ratio = std::strtof(a[7], nullptr);
    PluginField const fields[] = {PluginField("regions", ints, PluginFieldType::kINT32, 2),
        PluginField("global_ratio", &ratio, PluginFieldType::kFLOAT32, 1),
        PluginField("window", ints + 2, PluginFieldType::kINT32, 1),
        PluginField("budget", ints + 3, PluginFieldType::kINT32, 1),
        PluginField("grid_h", ints + 4, PluginFieldType::kINT32, 1),
        PluginField("grid_w", ints + 5, PluginFieldType::kINT32, 1)};
    PluginFieldCollection const fc{6, fields};
    hivtp::SelectParams params;
    params.regions = {ints[0], ints[1]};
    params.globalRatio = hivtp::widenFloat32(ratio);
    params.window = ints[2];
    params.budget = ints[3];
    int32_t const kmax = hivtp::selectKmax(static_cast<int32_t>(h), static_cast<int32_t>(w), params);
    std::vector<char> const all = readAll(a[10]);
    auto const scoreBytes = static_cast<size_t>(B * P * 4);
    hivtp::SelectCreator creator;
    auto const out = run(creator, fc, {desc({B, P}, DataType::kFLOAT), desc({B, P, D}, type)},
        {desc({B, kmax, D}, type), desc({B}, DataType::kINT32), desc({B, kmax}, DataType::kINT32)},
        {slice(all, 0, scoreBytes), slice(all, scoreBytes, static_cast<size_t>(B * P * D * bytesOf(type)))});
    std::ofstream file(a[11], std::ios::binary);
    file.write(reinterpret_cast<char const*>(&kmax), sizeof(kmax));
    for (auto const& o : out)
        file.write(o.data(), static_cast<std::streamsize>(o.size()));
    return 0;
}
} // namespace

int main(int argc, char** argv)
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        std::fprintf(stderr, "hivtp_gpu_smoke: no CUDA device\n");
        return 77;
    }
    std::string const mode = argc > 1 ? argv[1] : "";
    if (mode == "score" && argc == 10)
        return runScore(argv + 2);
    if (mode == "select" && argc == 14)
        return runSelect(argv + 2);
    std::fprintf(stderr, "usage: see the header of hivtpGpuSmoke.cpp\n");
    return 2;
}

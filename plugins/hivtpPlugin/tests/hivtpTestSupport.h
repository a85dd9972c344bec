/*
 * Shared harness of the host tests: CHECK macros, a capturing ILogger, fake CUDA hooks (device and
 * kernel loading), a tiny JSON reader, a constant-folding fake IExprBuilder and plugin helpers.
 */
#pragma once

#include "hivtpGeometry.h"
#include "hivtpKernels.h"
#include "hivtpLaunch.h"
#include "hivtpPlugin.h"

#include "NvInferRuntime.h"

#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

using namespace nvinfer1;
using namespace hivtp;

// ---------------------------------------------------------------------------------------------- harness
namespace hivtp_test
{
inline int gFailures = 0;
inline std::string gCurrentTest;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            ++gFailures;                                                                                               \
            std::fprintf(stderr, "FAIL %s:%d [%s] %s\n", __FILE__, __LINE__, gCurrentTest.c_str(), #cond);             \
        }                                                                                                              \
    } while (0)

#define CHECK_THROWS(expr, fragment)                                                                                   \
    do                                                                                                                 \
    {                                                                                                                  \
        std::string what_;                                                                                             \
        try                                                                                                            \
        {                                                                                                              \
            (void) (expr);                                                                                             \
        }                                                                                                              \
        catch (std::exception const& e_)                                                                               \
        {                                                                                                              \
            what_ = e_.what();                                                                                         \
        }                                                                                                              \
        if (what_.find(fragment) == std::string::npos)                                                                 \
        {                                                                                                              \
            ++gFailures;                                                                                               \
            std::fprintf(stderr, "FAIL %s:%d [%s] %s: expected a throw containing '%s', got '%s'\n", __FILE__,        \
                __LINE__, gCurrentTest.c_str(), #expr, fragment, what_.c_str());                                       \
        }                                                                                                              \
    } while (0)

class CaptureLogger : public ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
            messages.emplace_back(msg);
    }
    std::string take()
    {
        std::string all;
        for (auto const& m : messages)
            all += m + "\n";
        messages.clear();
        return all;
    }
    std::vector<std::string> messages;
};

class CaptureFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &logger;
    }
    CaptureLogger logger;
};

inline CaptureFinder gFinder;

// Fake CUDA: device ordinal -> compute capability; "loading" returns a fake handle.
// Fake CUDA records every launch, strided copy and upload so enqueue can be checked without a GPU.
struct LaunchRecord
{
    std::string variant;
    dim3 grid, block;
    size_t shared{};
    std::vector<std::array<unsigned char, 8>> params; // each parameter's bytes, in cubin order
    template <typename T>
    T param(char const* name, KernelEntry const& entry) const
    {
        for (int32_t i = 0; i < entry.numArgs; ++i)
        {
            if (std::strcmp(entry.args[i].name, name) == 0)
            {
                T value{};
                std::memcpy(&value, params[static_cast<size_t>(i)].data(), sizeof(T));
                return value;
            }
        }
        throw std::runtime_error(std::string("no parameter ") + name);
    }
};
struct CopyRecord
{
    void* dst;
    size_t dpitch;
    void const* src;
    size_t spitch, width, height;
};
inline std::array<int32_t, 3> gDevice{0, 8, 6};
inline std::vector<LaunchRecord> gLaunches;
inline std::vector<CopyRecord> gCopies;
inline std::vector<std::vector<int32_t>> gUploads; // contents of every fake device allocation
inline cudaError_t gLaunchStatus = cudaSuccess;     // what the fake launch returns

inline CudaHooks const gHooks{[] { return gDevice; },
    [](KernelEntry const& e, int32_t) { return reinterpret_cast<cudaKernel_t>(const_cast<unsigned char*>(e.cubin)); },
    [](LoadedKernel const& k, dim3 grid, dim3 block, void** args, size_t shared, cudaStream_t) {
        LaunchRecord r{k.entry->variant, grid, block, shared, {}};
        for (int32_t i = 0; i < k.entry->numParams; ++i)
        {
            r.params.emplace_back();
            size_t const size = i < k.entry->numArgs && (k.entry->args[i].kind == ArgKind::kI32
                                                            || k.entry->args[i].kind == ArgKind::kF32)
                ? 4
                : 8;
            r.params.back().fill(0);
            std::memcpy(r.params.back().data(), args[i], size);
        }
        gLaunches.push_back(r);
        return gLaunchStatus;
    },
    [](void* dst, size_t dpitch, void const* src, size_t spitch, size_t width, size_t height, cudaStream_t) {
        gCopies.push_back({dst, dpitch, src, spitch, width, height});
        return cudaSuccess;
    },
    [](void const* host, size_t bytes) -> void* {
        auto const* values = static_cast<int32_t const*>(host);
        gUploads.emplace_back(values, values + bytes / sizeof(int32_t));
        return gUploads.back().data(); // stable: tests reserve gUploads before uploading
    },
    [](void*) {}};

inline void useDevice(int32_t ordinal, int32_t major, int32_t minor)
{
    gDevice = {ordinal, major, minor};
}

// --------------------------------------------------------------------------------------- tiny JSON reader
struct Json
{
    enum Kind { kNull, kNumber, kString, kArray, kObject, kBool } kind{kNull};
    double number{};
    std::string text;
    std::vector<Json> items;
    std::map<std::string, Json> fields;

    Json const& operator[](std::string const& key) const
    {
        auto it = fields.find(key);
        if (it == fields.end())
            throw std::runtime_error("json: no key " + key);
        return it->second;
    }
    std::vector<int32_t> ints() const
    {
        std::vector<int32_t> out;
        for (auto const& i : items)
            out.push_back(static_cast<int32_t>(i.number));
        return out;
    }
};

class JsonParser
{
public:
    explicit JsonParser(std::string text)
        : s(std::move(text))
    {
    }
    Json parse()
    {
        Json v = value();
        skip();
        if (i != s.size())
            throw std::runtime_error("json: trailing data");
        return v;
    }

private:
    void skip()
    {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])))
            ++i;
    }
    Json value()
    {
        skip();
        Json v;
        char const c = s.at(i);
        if (c == '{')
        {
            v.kind = Json::kObject;
            ++i;
            skip();
            if (s.at(i) == '}')
                return ++i, v;
            for (;;)
            {
                std::string const key = value().text;
                skip();
                ++i; // ':'
                v.fields[key] = value();
                skip();
                if (s.at(i++) == '}')
                    return v;
            }
        }
        if (c == '[')
        {
            v.kind = Json::kArray;
            ++i;
            skip();
            if (s.at(i) == ']')
                return ++i, v;
            for (;;)
            {
                v.items.push_back(value());
                skip();
                if (s.at(i++) == ']')
                    return v;
            }
        }
        if (c == '"')
        {
            v.kind = Json::kString;
            for (++i; s.at(i) != '"'; ++i)
                v.text += s[i];
            ++i;
            return v;
        }
        if (s.compare(i, 4, "null") == 0)
            return i += 4, v;
        if (s.compare(i, 4, "true") == 0 || s.compare(i, 5, "false") == 0)
        {
            v.kind = Json::kBool;
            v.number = s[i] == 't' ? 1 : 0;
            i += s[i] == 't' ? 4 : 5;
            return v;
        }
        size_t used = 0;
        v.kind = Json::kNumber;
        v.number = std::stod(s.substr(i, 32), &used);
        i += used;
        return v;
    }
    std::string s;
    size_t i{0};
};

// ------------------------------------------------------------------------------ fake IExprBuilder (constants)
class FakeExprImpl : public apiv::VDimensionExpr
{
public:
    FakeExprImpl(int64_t v, bool c)
        : value(v)
        , constant(c)
    {
    }
    bool isConstant() const override
    {
        return constant;
    }
    int64_t getConstantValue() const override
    {
        return constant ? value : -1;
    }
    bool isSizeTensor() const override
    {
        return false;
    }
    int64_t value;
    bool constant;
};

class FakeExpr : public IDimensionExpr
{
public:
    FakeExpr(int64_t v, bool c)
        : impl(v, c)
    {
        mImpl = &impl;
    }
    ~FakeExpr() noexcept override = default;
    FakeExprImpl impl;
};

class FakeBuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        return make(value, true);
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        bool const c = a.isConstant() && b.isConstant();
        int64_t const x = a.getConstantValue(), y = b.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return make(x + y, c);
        case DimensionOperation::kSUB: return make(x - y, c);
        case DimensionOperation::kPROD: return make(x * y, c);
        default: return make(-1, false);
        }
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }
    IDimensionExpr const* make(int64_t v, bool c)
    {
        exprs.push_back(std::make_unique<FakeExpr>(v, c));
        return exprs.back().get();
    }
    std::vector<std::unique_ptr<FakeExpr>> exprs;
};

class FakeBuilder : public IExprBuilder
{
public:
    FakeBuilder()
    {
        mImpl = &impl;
    }
    ~FakeBuilder() noexcept override = default;
    DimsExprs dims(std::vector<int64_t> const& values, bool constant = true)
    {
        DimsExprs d{};
        d.nbDims = static_cast<int32_t>(values.size());
        for (size_t i = 0; i < values.size(); ++i)
            d.d[i] = impl.make(values[i], constant);
        return d;
    }
    FakeBuilderImpl impl;
};

inline std::vector<int64_t> values(DimsExprs const& d)
{
    std::vector<int64_t> out;
    for (int32_t i = 0; i < d.nbDims; ++i)
        out.push_back(d.d[i]->isConstant() ? d.d[i]->getConstantValue() : -1);
    return out;
}

// --------------------------------------------------------------------------------------- plugin helpers
inline Dims makeDims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i)
        d.d[i] = v[i];
    return d;
}

inline DynamicPluginTensorDesc desc(std::vector<int64_t> const& dims, DataType type)
{
    DynamicPluginTensorDesc d{};
    d.desc.dims = makeDims(dims);
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    d.min = d.max = d.opt = d.desc.dims;
    return d;
}

struct Fields
{
    std::vector<PluginField> fields;
    std::vector<std::shared_ptr<std::vector<char>>> storage;

    template <typename T>
    Fields& add(char const* name, PluginFieldType type, std::vector<T> const& v)
    {
        auto bytes = std::make_shared<std::vector<char>>(v.size() * sizeof(T));
        std::memcpy(bytes->data(), v.data(), bytes->size());
        storage.push_back(bytes);
        fields.emplace_back(name, bytes->data(), type, static_cast<int32_t>(v.size()));
        return *this;
    }
    PluginFieldCollection collection() const
    {
        return PluginFieldCollection{static_cast<int32_t>(fields.size()), fields.data()};
    }
};

template <typename Plugin>
std::unique_ptr<Plugin> create(IPluginCreatorV3One& creator, Fields const& f, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection const fc = f.collection();
    return std::unique_ptr<Plugin>(static_cast<Plugin*>(creator.createPlugin("node", &fc, phase)));
}

inline char const* typeName(PluginFieldType t)
{
    switch (t)
    {
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kINT64: return "kINT64";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    default: return "other";
    }
}

inline std::string fieldValueJson(PluginField const& f)
{
    std::ostringstream out;
    if (f.type == PluginFieldType::kFLOAT32)
    {
        out << widenFloat32(*static_cast<float const*>(f.data));
        return out.str();
    }
    auto const* v = static_cast<int32_t const*>(f.data);
    if (std::strcmp(f.name, "score_layers") == 0 || std::strcmp(f.name, "regions") == 0)
    {
        out << "[";
        for (int32_t i = 0; i < f.length; ++i)
            out << (i ? ", " : "") << v[i];
        out << "]";
        return out.str();
    }
    out << v[0];
    return out.str();
}
} // namespace hivtp_test

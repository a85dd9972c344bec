#include "hivtpFields.h"

#include "hivtpCommon.h"

#include <cstring>
#include <limits>
#include <set>

namespace hivtp
{
namespace
{
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;

char const* typeName(PluginFieldType type)
{
    switch (type)
    {
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kINT64: return "kINT64";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    default: return "another type";
    }
}

//! Integer values of a kINT32 or kINT64 field, each checked to fit int32.
std::vector<int32_t> readInts(PluginField const& f)
{
    HIVTP_VALIDATE(f.type == PluginFieldType::kINT32 || f.type == PluginFieldType::kINT64,
        "field '" << f.name << "' must be kINT32 or kINT64, got " << typeName(f.type) << " ("
                  << static_cast<int32_t>(f.type) << ")");
    HIVTP_VALIDATE(f.length >= 0 && (f.length == 0 || f.data != nullptr),
        "field '" << f.name << "' has length " << f.length << " and data " << f.data);
    std::vector<int32_t> values;
    for (int32_t i = 0; i < f.length; ++i)
    {
        int64_t v = 0;
        if (f.type == PluginFieldType::kINT32)
            v = static_cast<int32_t const*>(f.data)[i];
        else
            std::memcpy(&v, static_cast<char const*>(f.data) + sizeof(int64_t) * i, sizeof(int64_t));
        HIVTP_VALIDATE(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
            "field '" << f.name << "' value " << v << " does not fit int32");
        values.push_back(static_cast<int32_t>(v));
    }
    return values;
}

int32_t readInt(PluginField const& f)
{
    std::vector<int32_t> const values = readInts(f);
    HIVTP_VALIDATE(values.size() == 1, "field '" << f.name << "' must hold one int, got " << values.size());
    return values[0];
}

//! A kFLOAT32 (widened to the shortest decimal, see widenFloat32) or kFLOAT64 scalar.
double readFloat(PluginField const& f)
{
    HIVTP_VALIDATE(f.type == PluginFieldType::kFLOAT32 || f.type == PluginFieldType::kFLOAT64,
        "field '" << f.name << "' must be kFLOAT32 or kFLOAT64, got " << typeName(f.type) << " ("
                  << static_cast<int32_t>(f.type) << ")");
    HIVTP_VALIDATE(f.length == 1 && f.data != nullptr, "field '" << f.name << "' must hold one float, got length " << f.length);
    if (f.type == PluginFieldType::kFLOAT64)
    {
        double v = 0;
        std::memcpy(&v, f.data, sizeof(v));
        return v;
    }
    float v = 0;
    std::memcpy(&v, f.data, sizeof(v));
    return widenFloat32(v);
}

//! Calls visit(field) for each field, refusing unknown and repeated names.
template <typename Visit>
void forEachField(PluginFieldCollection const* fc, std::set<std::string> const& known, char const* plugin, Visit visit)
{
    if (fc == nullptr)
        return;
    HIVTP_VALIDATE(fc->nbFields >= 0 && (fc->nbFields == 0 || fc->fields != nullptr),
        plugin << ": bad field collection (" << fc->nbFields << " fields)");
    std::set<std::string> seen;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        HIVTP_VALIDATE(f.name != nullptr, plugin << ": field " << i << " has no name");
        std::string const name = f.name;
        std::string knownList;
        for (auto const& k : known)
            knownList += (knownList.empty() ? "" : ", ") + k;
        HIVTP_VALIDATE(known.count(name) == 1, plugin << ": unknown field '" << name << "' (known: " << knownList << ")");
        HIVTP_VALIDATE(seen.insert(name).second, plugin << ": field '" << name << "' given twice");
        visit(f, name);
    }
}
} // namespace

std::vector<PluginField> scoreFieldDeclarations()
{
    return {PluginField("score_layers", nullptr, PluginFieldType::kINT32, 3)};
}

std::vector<PluginField> selectFieldDeclarations()
{
    return {
        PluginField("regions", nullptr, PluginFieldType::kINT32, 2),
        PluginField("global_ratio", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("window", nullptr, PluginFieldType::kINT32, 1),
        PluginField("budget", nullptr, PluginFieldType::kINT32, 1),
        PluginField("grid_h", nullptr, PluginFieldType::kINT32, 1),
        PluginField("grid_w", nullptr, PluginFieldType::kINT32, 1),
    };
}

void validateScoreConfig(ScoreConfig const& config)
{
    std::set<int32_t> unique;
    for (int32_t layer : config.scoreLayers)
    {
        HIVTP_VALIDATE(layer >= 0, "score_layers must be layer indices >= 0, got " << layer);
        HIVTP_VALIDATE(unique.insert(layer).second, "score_layers must not repeat a layer, got " << layer << " twice");
    }
    HIVTP_VALIDATE(!config.scoreLayers.empty(), "score_layers must be non-empty");
}

void validateSelectConfig(SelectConfig const& config)
{
    SelectParams const& p = config.params;
    HIVTP_VALIDATE(p.regions[0] > 0 && p.regions[1] > 0,
        "regions must be two positive ints (rows, cols), got (" << p.regions[0] << ", " << p.regions[1] << ")");
    HIVTP_VALIDATE(p.globalRatio >= 0.0 && p.globalRatio <= 1.0, "global_ratio must be in [0, 1], got " << p.globalRatio);
    HIVTP_VALIDATE(p.window > 0, "window must be a positive int, got " << p.window);
    HIVTP_VALIDATE(p.budget >= 0, "budget must be >= 0 (0 encodes None), got " << p.budget);
    HIVTP_VALIDATE(config.gridH >= 0 && config.gridW >= 0 && (config.gridH > 0) == (config.gridW > 0),
        "grid_h and grid_w must both be > 0, or both 0, got " << config.gridH << " and " << config.gridW);
    if (config.gridH > 0)
        selectionGeometry(config.gridH, config.gridW, p); // throws on a grid the geometry refuses
}

ScoreConfig parseScoreFields(PluginFieldCollection const* fc)
{
    ScoreConfig config;
    forEachField(fc, {"score_layers"}, kSCORE_NAME,
        [&](PluginField const& f, std::string const&) { config.scoreLayers = readInts(f); });
    validateScoreConfig(config);
    return config;
}

SelectConfig parseSelectFields(PluginFieldCollection const* fc)
{
    SelectConfig config;
    std::set<std::string> const known{"regions", "global_ratio", "window", "budget", "grid_h", "grid_w"};
    forEachField(fc, known, kSELECT_NAME, [&](PluginField const& f, std::string const& name) {
        if (name == "regions")
        {
            std::vector<int32_t> const v = readInts(f);
            HIVTP_VALIDATE(v.size() == 2, "regions must hold two ints (rows, cols), got " << v.size());
            config.params.regions = {v[0], v[1]};
        }
        else if (name == "global_ratio")
            config.params.globalRatio = readFloat(f);
        else if (name == "window")
            config.params.window = readInt(f);
        else if (name == "budget")
            config.params.budget = readInt(f);
        else if (name == "grid_h")
            config.gridH = readInt(f);
        else
            config.gridW = readInt(f);
    });
    validateSelectConfig(config);
    return config;
}

void FieldWriter::clear()
{
    mInts.clear();
    mFloats.clear();
    mFields.clear();
    mInts.reserve(8); // pointers into these vectors must stay valid while fields are added
    mFloats.reserve(8);
}

void FieldWriter::addInts(char const* name, std::vector<int32_t> const& values)
{
    HIVTP_VALIDATE(mInts.size() < mInts.capacity(), "FieldWriter: too many int fields");
    mInts.push_back(values);
    mFields.emplace_back(name, mInts.back().data(), PluginFieldType::kINT32, static_cast<int32_t>(values.size()));
}

void FieldWriter::addInt(char const* name, int32_t value)
{
    addInts(name, {value});
}

void FieldWriter::addFloat(char const* name, float value)
{
    HIVTP_VALIDATE(mFloats.size() < mFloats.capacity(), "FieldWriter: too many float fields");
    mFloats.push_back(value);
    mFields.emplace_back(name, &mFloats.back(), PluginFieldType::kFLOAT32, 1);
}

nvinfer1::PluginFieldCollection const* FieldWriter::collection()
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
}

void writeScoreFields(ScoreConfig const& config, FieldWriter& writer)
{
    writer.clear();
    writer.addInts("score_layers", config.scoreLayers);
}

void writeSelectFields(SelectConfig const& config, FieldWriter& writer)
{
    writer.clear();
    writer.addInts("regions", {config.params.regions[0], config.params.regions[1]});
    // float32 like the ONNX attribute; readFloat widens it back to the same double.
    writer.addFloat("global_ratio", static_cast<float>(config.params.globalRatio));
    writer.addInt("window", config.params.window);
    writer.addInt("budget", config.params.budget);
    writer.addInt("grid_h", config.gridH);
    writer.addInt("grid_w", config.gridW);
}

} // namespace hivtp

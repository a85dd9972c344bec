/*
 * Plugin fields <-> configs. Names, types and defaults mirror plugins/plugin_fields.py (the one
 * source; tests/test_plugin_fields.py checks this file's creators against it through the host-test
 * binary's --print-fields). Readers are lenient: kINT32 or kINT64 for ints, kFLOAT32 or kFLOAT64
 * for floats. budget = 0 encodes None (paper mode); grid_h = grid_w = 0 means "square grid from P".
 */
#pragma once

#include "hivtpGeometry.h"

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace hivtp
{

struct ScoreConfig
{
    std::vector<int32_t> scoreLayers{6, 7, 8};
};

struct SelectConfig
{
    SelectParams params;
    int32_t gridH{0};
    int32_t gridW{0};
};

//! Field declarations the creators hand TensorRT (name, type, length of the default; data nullptr).
std::vector<nvinfer1::PluginField> scoreFieldDeclarations();
std::vector<nvinfer1::PluginField> selectFieldDeclarations();

//! Parse and validate a collection (nullptr = all defaults); throws PluginError naming the field.
ScoreConfig parseScoreFields(nvinfer1::PluginFieldCollection const* fc);
SelectConfig parseSelectFields(nvinfer1::PluginFieldCollection const* fc);

void validateScoreConfig(ScoreConfig const& config);
void validateSelectConfig(SelectConfig const& config);

//! Owns the storage behind a PluginFieldCollection (what getFieldsToSerialize returns).
class FieldWriter
{
public:
    void clear();
    void addInts(char const* name, std::vector<int32_t> const& values);
    void addInt(char const* name, int32_t value);
    void addFloat(char const* name, float value);
    nvinfer1::PluginFieldCollection const* collection();

private:
    std::vector<std::vector<int32_t>> mInts;
    std::vector<float> mFloats;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

void writeScoreFields(ScoreConfig const& config, FieldWriter& writer);
void writeSelectFields(SelectConfig const& config, FieldWriter& writer);

} // namespace hivtp

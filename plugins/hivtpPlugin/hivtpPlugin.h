/*
 * hivtp TensorRT plugins (IPluginV3, namespace "hivtp", version "1"):
 *   Score:  queries, keys [L, B, H, N, d]            -> scores [B, P] fp32             (P = N - 1)
 *   Select: scores [B, P] fp32, features [B, P, D]   -> selected [B, Kmax, D], counts [B] int32,
 *                                                       indices [B, Kmax] int32 (ascending, -1 padded)
 * Each plugin implements the three V3One capabilities; creators implement IPluginCreatorV3One. What the
 * two share (identity, capabilities, clone, serialization, the creators) is in hivtpPluginBase.h.
 * Kernels come from the embedded cubin table (hivtpKernels.h), loaded at creation.
 */
#pragma once

#include "hivtpPluginBase.h"

#include "NvInferRuntime.h"

#include <memory>
#include <string>
#include <vector>

namespace hivtp
{

//! Score's op-specific pieces for PluginBase / PluginCreator (hivtpPluginBase.h).
struct ScoreTraits
{
    using Config = ScoreConfig;
    static constexpr char const* kNAME = kSCORE_NAME;
    static constexpr auto declareFields = scoreFieldDeclarations;
    static constexpr auto parseFields = parseScoreFields;
    static constexpr auto validateConfig = validateScoreConfig;
    static constexpr auto writeFields = writeScoreFields;
    static std::vector<std::string> kernelFamilies()
    {
        return {kSCORE_KERNEL, kSCORE_REDUCE_KERNEL};
    }
};

//! Select's op-specific pieces for PluginBase / PluginCreator (hivtpPluginBase.h).
struct SelectTraits
{
    using Config = SelectConfig;
    static constexpr char const* kNAME = kSELECT_NAME;
    static constexpr auto declareFields = selectFieldDeclarations;
    static constexpr auto parseFields = parseSelectFields;
    static constexpr auto validateConfig = validateSelectConfig;
    static constexpr auto writeFields = writeSelectFields;
    static std::vector<std::string> kernelFamilies()
    {
        return {kSELECT_KERNEL, kGATHER_KERNEL};
    }
};

class ScorePlugin : public PluginBase<ScorePlugin, ScoreTraits>
{
public:
    ScorePlugin(ScoreConfig config, std::shared_ptr<DeviceKernels const> kernels);

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    void checkShapes(nvinfer1::Dims const& q, nvinfer1::Dims const& k) const;
};

class SelectPlugin : public PluginBase<SelectPlugin, SelectTraits>
{
public:
    SelectPlugin(SelectConfig config, std::shared_ptr<DeviceKernels const> kernels);

    //! Shares the device geometry as well (tables are shared, never copied); hides PluginBase::copy.
    std::unique_ptr<SelectPlugin> copy() const;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime (attachToContext also uploads the geometry)
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;

    //! Kmax for P patches (P < 0: unknown, needs an explicit grid); throws when it cannot be known.
    int32_t kmaxFor(int64_t numPatches) const;

private:
    //! Resolves mConfig's grid_h / grid_w from P when they were given as 0 (configurePlugin, onShapeChange).
    void resolveGridFrom(int64_t numPatches);

    // shared, uploaded at attach (or at onShapeChange when the grid is only known then)
    std::shared_ptr<DeviceGeometry const> mGeometry;
};

using ScoreCreator = PluginCreator<ScorePlugin>;
using SelectCreator = PluginCreator<SelectPlugin>;

} // namespace hivtp

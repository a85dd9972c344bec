/*
 * Select: scores [B, P] fp32, features [B, P, D] (fp16 / bf16 / fp32)
 *   -> selected [B, Kmax, D] (features' type, zero rows after counts[b]), counts [B] int32,
 *      indices [B, Kmax] int32 (kept patch indices ascending, then -1).
 * Kmax: paper mode sum(region_quota) + W; budget mode min(budget, P) (every row full).
 */
#include "hivtpPlugin.h"

#include "hivtpCommon.h"

namespace hivtp
{
namespace
{
using namespace nvinfer1;

constexpr int32_t kNB_INPUTS = 2;  // scores, features
constexpr int32_t kNB_OUTPUTS = 3; // selected, counts, indices

void checkIo(int32_t nbInputs, int32_t nbOutputs)
{
    HIVTP_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
        "Select takes 2 inputs (scores, features) and has 3 outputs (selected, counts, indices), got " << nbInputs
                                                                                                         << " and "
                                                                                                         << nbOutputs);
}

//! Checks scores [B, P] / features [B, P, D] agree where known; returns P (-1 when unknown).
int64_t checkInputs(Dims const& scores, Dims const& features)
{
    HIVTP_VALIDATE(scores.nbDims == 2 && features.nbDims == 3,
        "Select: scores must be [B, P] and features [B, P, D], got ranks " << scores.nbDims << " and "
                                                                            << features.nbDims);
    for (int32_t i = 0; i < 2; ++i)
    {
        HIVTP_VALIDATE(scores.d[i] < 0 || features.d[i] < 0 || scores.d[i] == features.d[i],
            "Select: scores and features disagree on dim " << i << ": " << scores.d[i] << " vs " << features.d[i]);
    }
    return scores.d[1] >= 0 ? scores.d[1] : features.d[1];
}
} // namespace

SelectPlugin::SelectPlugin(SelectConfig config, std::shared_ptr<DeviceKernels const> kernels)
    : PluginBase(std::move(config), std::move(kernels))
{
}

std::unique_ptr<SelectPlugin> SelectPlugin::copy() const
{
    auto copy = std::make_unique<SelectPlugin>(mConfig, mKernels);
    copy->mGeometry = mGeometry; // device tables are shared, never copied
    return copy;
}

int32_t SelectPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t SelectPlugin::kmaxFor(int64_t numPatches) const
{
    HIVTP_VALIDATE(numPatches >= 0 || mConfig.gridH > 0,
        "Select: Kmax needs the patch grid; give grid_h / grid_w or a build-time constant P");
    auto const [h, w] = resolveGrid(mConfig.gridH, mConfig.gridW, numPatches);
    return selectKmax(h, w, mConfig.params);
}

void SelectPlugin::resolveGridFrom(int64_t numPatches)
{
    auto const [h, w] = resolveGrid(mConfig.gridH, mConfig.gridW, numPatches);
    mConfig.gridH = h; // serialized from here on: the runtime instance never has to guess the grid
    mConfig.gridW = w;
}

int32_t SelectPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        checkIo(nbInputs, nbOutputs);
        HIVTP_VALIDATE(inputTypes[0] == DataType::kFLOAT, "Select: scores must be fp32");
        outputTypes[0] = inputTypes[1];   // selected: the features' type
        outputTypes[1] = DataType::kINT32; // counts
        outputTypes[2] = DataType::kINT32; // indices
        return 0;
    }
    catch (...)
    {
        logCaught("Select::getOutputDataTypes");
    }
    return -1;
}

int32_t SelectPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    try
    {
        checkIo(nbInputs, nbOutputs);
        HIVTP_VALIDATE(inputs[0].nbDims == 2 && inputs[1].nbDims == 3,
            "Select: scores must be [B, P] and features [B, P, D], got ranks " << inputs[0].nbDims << " and "
                                                                                << inputs[1].nbDims);
        IDimensionExpr const* p = inputs[0].d[1];
        int64_t const numPatches = p->isConstant() ? p->getConstantValue() : -1;
        IDimensionExpr const* kmax = exprBuilder.constant(kmaxFor(numPatches)); // static width, from the geometry
        outputs[0].nbDims = 3;
        outputs[0].d[0] = inputs[1].d[0]; // B
        outputs[0].d[1] = kmax;           // Kmax (= K in budget mode)
        outputs[0].d[2] = inputs[1].d[2]; // D
        outputs[1].nbDims = 1;
        outputs[1].d[0] = inputs[0].d[0]; // B
        outputs[2].nbDims = 2;
        outputs[2].d[0] = inputs[0].d[0]; // B
        outputs[2].d[1] = kmax;           // Kmax
        return 0;
    }
    catch (...)
    {
        logCaught("Select::getOutputShapes");
    }
    return -1;
}

bool SelectPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        checkIo(nbInputs, nbOutputs);
        HIVTP_VALIDATE(pos >= 0 && pos < kNB_INPUTS + kNB_OUTPUTS, "Select: bad position " << pos);
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
            return false;
        switch (pos)
        {
        case 0: return desc.type == DataType::kFLOAT;                         // scores: fp32 (Score's output)
        case 1: return pickGather(*mKernels, desc.type) != nullptr;          // features: a type gather copies
        case 2: return desc.type == inOut[1].desc.type;                      // selected: features' type
        default: return desc.type == DataType::kINT32;                       // counts, indices: int32
        }
    }
    catch (...)
    {
        logCaught("Select::supportsFormatCombination");
    }
    return false;
}

int32_t SelectPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        checkIo(nbInputs, nbOutputs);
        checkInputs(in[0].desc.dims, in[1].desc.dims);
        int64_t const minP = checkInputs(in[0].min, in[1].min), maxP = checkInputs(in[0].max, in[1].max);
        HIVTP_VALIDATE(minP == maxP, "Select: P must be a build-time constant (profile gives " << minP << ".." << maxP << ")");
        resolveGridFrom(maxP);
        HIVTP_VALIDATE(pickSelect(*mKernels, maxP) != nullptr,
            "Select: no compiled select_kernel variant for P = " << maxP << " patches on this device");
        HIVTP_VALIDATE(pickGather(*mKernels, in[1].desc.type) != nullptr,
            "Select: no compiled gather_kernel for " << tritonType(in[1].desc.type) << " features on this device");
        return 0;
    }
    catch (...)
    {
        logCaught("Select::configurePlugin");
    }
    return -1;
}

size_t SelectPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    try
    {
        checkIo(nbInputs, nbOutputs);
        int64_t const P = inputs[0].max.d[1];
        LoadedKernel const* select = pickSelect(*mKernels, P);
        LoadedKernel const* gather = pickGather(*mKernels, inputs[1].desc.type);
        HIVTP_VALIDATE(select != nullptr && gather != nullptr, "Select: no kernel variant for P = " << P);
        SelectPlan const plan
            = planSelectFor(*select->entry, *gather->entry, inputs[0].max.d[0], kmaxFor(P), inputs[1].max.d[2]);
        return static_cast<size_t>(plan.workspaceBytes);
    }
    catch (...)
    {
        logCaught("Select::getWorkspaceSize");
    }
    return 0;
}

int32_t SelectPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        checkIo(nbInputs, nbOutputs);
        int64_t const P = checkInputs(in[0].dims, in[1].dims);
        resolveGridFrom(P);
        if (!mGeometry) // normally uploaded in attachToContext; this covers a grid only known now
            mGeometry = deviceGeometry(mConfig.gridH, mConfig.gridW, mConfig.params);
        return 0;
    }
    catch (...)
    {
        logCaught("Select::onShapeChange");
    }
    return -1;
}

int32_t SelectPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& f = inputDesc[1].dims;
        LoadedKernel const* select = pickSelect(*mKernels, f.d[1]);
        LoadedKernel const* gather = pickGather(*mKernels, inputDesc[1].type);
        HIVTP_VALIDATE(select != nullptr && gather != nullptr && mGeometry != nullptr,
            "Select: not configured for features of P = " << f.d[1]);
        SelectLaunch const args{f.d[0], f.d[1], f.d[2], mGeometry->host.kmax, !mConfig.params.paperMode(),
            mGeometry.get(), static_cast<float const*>(inputs[0]), inputs[1], outputs[0],
            static_cast<int32_t*>(outputs[1]), static_cast<int32_t*>(outputs[2]), workspace};
        HIVTP_CUDA_CHECK(launchSelect(*select, *gather, args, stream));
        return 0;
    }
    catch (...)
    {
        logCaught("Select::enqueue");
    }
    return -1;
}

IPluginV3* SelectPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    try
    {
        std::unique_ptr<SelectPlugin> attached = copy();
        if (!attached->mGeometry && mConfig.gridH > 0) // upload here, outside enqueue and any stream capture
            attached->mGeometry = deviceGeometry(mConfig.gridH, mConfig.gridW, mConfig.params);
        return attached.release();
    }
    catch (...)
    {
        logCaught("Select::attachToContext");
    }
    return nullptr;
}

} // namespace hivtp

/*
 * Score: queries, keys [L, B, H, N, d] (fp16 / bf16 / fp32, same type) -> scores [B, P] fp32, P = N - 1.
 * The L axis must have len(score_layers) entries; the kernels are score_kernel + score_reduce_kernel.
 */
#include "hivtpPlugin.h"

#include "hivtpCommon.h"

namespace hivtp
{
namespace
{
using namespace nvinfer1;

constexpr int32_t kNB_INPUTS = 2;  // queries, keys
constexpr int32_t kNB_OUTPUTS = 1; // scores

bool isFloatType(DataType t)
{
    return t == DataType::kHALF || t == DataType::kBF16 || t == DataType::kFLOAT;
}

std::string dimsText(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + "]";
}
} // namespace

ScorePlugin::ScorePlugin(ScoreConfig config, std::shared_ptr<DeviceKernels const> kernels)
    : PluginBase(std::move(config), std::move(kernels))
{
}

int32_t ScorePlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t ScorePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        HIVTP_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            "Score takes 2 inputs and has 1 output, got " << nbInputs << " and " << nbOutputs);
        HIVTP_VALIDATE(isFloatType(inputTypes[0]) && inputTypes[1] == inputTypes[0],
            "Score: queries and keys must share an fp16 / bf16 / fp32 type");
        outputTypes[0] = DataType::kFLOAT; // scores are always fp32
        return 0;
    }
    catch (...)
    {
        logCaught("Score::getOutputDataTypes");
    }
    return -1;
}

int32_t ScorePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    try
    {
        HIVTP_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            "Score takes 2 inputs and has 1 output, got " << nbInputs << " and " << nbOutputs);
        HIVTP_VALIDATE(inputs[0].nbDims == 5 && inputs[1].nbDims == 5,
            "Score: queries and keys must be [L, B, H, N, d], got ranks " << inputs[0].nbDims << " and "
                                                                          << inputs[1].nbDims);
        outputs[0].nbDims = 2;
        outputs[0].d[0] = inputs[0].d[1]; // B
        outputs[0].d[1] = exprBuilder.operation(DimensionOperation::kSUB, *inputs[0].d[3], *exprBuilder.constant(1)); // P = N - 1
        HIVTP_VALIDATE(outputs[0].d[1] != nullptr, "Score: the expression builder returned no P = N - 1");
        return 0;
    }
    catch (...)
    {
        logCaught("Score::getOutputShapes");
    }
    return -1;
}

bool ScorePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        HIVTP_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS && pos >= 0 && pos < 3,
            "Score: bad supportsFormatCombination query pos=" << pos << " (" << nbInputs << " in, " << nbOutputs << " out)");
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
            return false;
        switch (pos)
        {
        case 0: return pickScore(*mKernels, desc.type, -1, -1) != nullptr; // queries: a type some variant takes
        case 1: return desc.type == inOut[0].desc.type;                   // keys: same type as queries
        default: return desc.type == DataType::kFLOAT;                    // scores: fp32
        }
    }
    catch (...)
    {
        logCaught("Score::supportsFormatCombination");
    }
    return false;
}

void ScorePlugin::checkShapes(Dims const& q, Dims const& k) const
{
    HIVTP_VALIDATE(q.nbDims == 5 && k.nbDims == 5, "Score: queries and keys must be [L, B, H, N, d], got "
                                                       << dimsText(q) << " and " << dimsText(k));
    for (int32_t i = 0; i < 5; ++i)
        HIVTP_VALIDATE(q.d[i] == k.d[i], "Score: queries " << dimsText(q) << " and keys " << dimsText(k) << " differ");
    auto const layers = static_cast<int64_t>(mConfig.scoreLayers.size());
    HIVTP_VALIDATE(q.d[0] < 0 || q.d[0] == layers,
        "Score: queries have L = " << q.d[0] << " layers but score_layers lists " << layers);
}

int32_t ScorePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        HIVTP_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, "Score: 2 inputs and 1 output expected");
        checkShapes(in[0].desc.dims, in[1].desc.dims);
        checkShapes(in[0].max, in[1].max);
        int64_t const maxN = in[0].max.d[3], d = in[0].max.d[4];
        HIVTP_VALIDATE(pickScore(*mKernels, in[0].desc.type, maxN, d) != nullptr,
            "Score: no compiled score_kernel variant for " << tritonType(in[0].desc.type) << " with head dim d = " << d
                                                           << " and N = " << maxN << " tokens on this device");
        // refuse shapes the kernels cannot take, at build time (grid extents, int32 partial offsets)
        planScore(in[0].max.d[0], in[0].max.d[1], in[0].max.d[2], maxN, minScoreBlockM(*mKernels, in[0].desc.type, d), 1);
        return 0;
    }
    catch (...)
    {
        logCaught("Score::configurePlugin");
    }
    return -1;
}

size_t ScorePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    try
    {
        HIVTP_VALIDATE(nbInputs == kNB_INPUTS, "Score: 2 inputs expected");
        Dims const& q = inputs[0].max;
        // Any shape up to the max may run: size the partials for the max N and the smallest BLOCK_M.
        int64_t const blockM = minScoreBlockM(*mKernels, inputs[0].desc.type, q.d[4]);
        HIVTP_VALIDATE(blockM > 0, "Score: no kernel variant for the max shape " << dimsText(q));
        return static_cast<size_t>(planScore(q.d[0], q.d[1], q.d[2], q.d[3], blockM, 1).workspaceBytes);
    }
    catch (...)
    {
        logCaught("Score::getWorkspaceSize");
    }
    return 0;
}

int32_t ScorePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        HIVTP_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, "Score: 2 inputs and 1 output expected");
        checkShapes(in[0].dims, in[1].dims);
        return 0;
    }
    catch (...)
    {
        logCaught("Score::onShapeChange");
    }
    return -1;
}

int32_t ScorePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& q = inputDesc[0].dims;
        LoadedKernel const* main = pickScore(*mKernels, inputDesc[0].type, q.d[3], q.d[4]);
        LoadedKernel const* reduce = pickScoreReduce(*mKernels);
        HIVTP_VALIDATE(main != nullptr && reduce != nullptr, "Score: no kernel variant for " << dimsText(q));
        ScoreLaunch const args{q, inputs[0], inputs[1], static_cast<float*>(outputs[0]), workspace};
        HIVTP_CUDA_CHECK(launchScore(*main, *reduce, args, stream));
        return 0;
    }
    catch (...)
    {
        logCaught("Score::enqueue");
    }
    return -1;
}

} // namespace hivtp

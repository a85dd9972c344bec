/*
 * What every hivtp plugin and creator shares, written once:
 *   PluginIdentity<Interface, Traits>  name, version and namespace, for a plugin's IPluginV3OneCore and
 *                                      for its creator alike
 *   PluginBase<Derived, Traits>        the IPluginV3 plumbing that does not depend on the op (capabilities,
 *                                      clone, attachToContext, getFieldsToSerialize) and the state behind
 *                                      it (config, kernels)
 *   PluginCreator<Plugin>              an IPluginCreatorV3One that parses the fields, loads the kernels and
 *                                      constructs Plugin
 * The op-specific part (output types and shapes, formats, configure, workspace, enqueue) stays in the
 * plugin's own class. Traits (ScoreTraits, SelectTraits in hivtpPlugin.h) name the op and its pieces:
 *   Config                             the serialized attributes (hivtpFields.h)
 *   kNAME                              plugin name (ONNX op_type), also the prefix of logged errors
 *   declareFields, parseFields,        the hivtpFields.h functions for Config
 *   validateConfig, writeFields
 *   kernelFamilies()                   the aot.py kernels loaded at creation
 * Every noexcept entry point here keeps the library's error model (hivtpCommon.h): catch, log
 * "<kNAME>::<method>: <what>", return nullptr / -1.
 */
#pragma once

#include "hivtpCommon.h"
#include "hivtpFields.h"
#include "hivtpLaunch.h"

#include "NvInferRuntime.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hivtp
{

//! getPluginName / getPluginVersion / getPluginNamespace for an interface that declares them
//! (IPluginV3OneCore, IPluginCreatorV3One): TensorRT matches a plugin to its creator by these three.
template <typename Interface, typename Traits>
class PluginIdentity : public Interface
{
public:
    char const* getPluginName() const noexcept override
    {
        return Traits::kNAME;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPLUGIN_VERSION;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPLUGIN_NAMESPACE;
    }
};

template <typename Derived, typename TraitsT>
class PluginBase : public nvinfer1::IPluginV3,
                   public PluginIdentity<nvinfer1::IPluginV3OneCore, TraitsT>,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    using Traits = TraitsT;
    using Config = typename Traits::Config;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneRuntime (attachToContext: a plain clone unless Derived overrides it)
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    Config const& config() const
    {
        return mConfig;
    }

    //! A new instance with the same attributes and kernels; clone() calls Derived's copy(), so a plugin
    //! with more shared state hides this one with its own.
    std::unique_ptr<Derived> copy() const
    {
        return std::make_unique<Derived>(mConfig, mKernels);
    }

protected:
    //! Validates here, so that every construction (create, clone, attach) refuses a bad config.
    PluginBase(Config config, std::shared_ptr<DeviceKernels const> kernels);

    // serialized attributes
    Config mConfig{};
    // shared, loaded at creation
    std::shared_ptr<DeviceKernels const> mKernels;

private:
    FieldWriter mFields; // storage behind getFieldsToSerialize's collection
};

template <typename Plugin>
class PluginCreator : public PluginIdentity<nvinfer1::IPluginCreatorV3One, typename Plugin::Traits>
{
public:
    using Traits = typename Plugin::Traits;

    PluginCreator();
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mCollection;
    }
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

// ---- PluginBase ----

template <typename Derived, typename TraitsT>
PluginBase<Derived, TraitsT>::PluginBase(Config config, std::shared_ptr<DeviceKernels const> kernels)
    : mConfig(std::move(config))
    , mKernels(std::move(kernels))
{
    Traits::validateConfig(mConfig);
    HIVTP_VALIDATE(mKernels != nullptr, Traits::kNAME << ": no kernels loaded");
}

template <typename Derived, typename TraitsT>
nvinfer1::IPluginCapability* PluginBase<Derived, TraitsT>::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept
{
    using nvinfer1::PluginCapabilityType;
    try
    {
        switch (type)
        {
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        }
        HIVTP_VALIDATE(false, "unknown capability type " << static_cast<int32_t>(type));
    }
    catch (...)
    {
        logCaught(Traits::kNAME, "getCapabilityInterface");
    }
    return nullptr;
}

template <typename Derived, typename TraitsT>
nvinfer1::IPluginV3* PluginBase<Derived, TraitsT>::clone() noexcept
{
    try
    {
        return static_cast<Derived const&>(*this).copy().release();
    }
    catch (...)
    {
        logCaught(Traits::kNAME, "clone");
    }
    return nullptr;
}

template <typename Derived, typename TraitsT>
nvinfer1::IPluginV3* PluginBase<Derived, TraitsT>::attachToContext(
    nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

template <typename Derived, typename TraitsT>
nvinfer1::PluginFieldCollection const* PluginBase<Derived, TraitsT>::getFieldsToSerialize() noexcept
{
    try
    {
        Traits::writeFields(mConfig, mFields);
        return mFields.collection();
    }
    catch (...)
    {
        logCaught(Traits::kNAME, "getFieldsToSerialize");
    }
    return nullptr;
}

// ---- PluginCreator ----

template <typename Plugin>
PluginCreator<Plugin>::PluginCreator()
    : mFields(Traits::declareFields())
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

template <typename Plugin>
nvinfer1::IPluginV3* PluginCreator<Plugin>::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        typename Traits::Config config = Traits::parseFields(fc);
        // Load at creation (build and deserialisation alike): a GPU the library has no cubin for fails here.
        auto kernels = loadKernels(Traits::kernelFamilies());
        return new Plugin(std::move(config), std::move(kernels));
    }
    catch (...)
    {
        logCaught(Traits::kNAME, "createPlugin", name != nullptr ? name : "");
    }
    return nullptr;
}

} // namespace hivtp

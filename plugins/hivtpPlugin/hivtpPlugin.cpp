/*
 * Library entry points. Dynamic loading (trtexec --dynamicPlugins, IPluginRegistry::loadLibrary) uses
 * the two extern "C" functions below; static registration (REGISTER_TENSORRT_PLUGIN, which calls
 * libnvinfer's getPluginRegistry and so needs linking against it) only with HIVTP_STATIC_REGISTRATION.
 */
#include "hivtpPlugin.h"

#include "hivtpCommon.h"

// Not TENSORRTAPI: it is empty outside TensorRT's own build. Everything else in the library is hidden.
#define HIVTP_EXPORT extern "C" __attribute__((visibility("default")))

HIVTP_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    hivtp::setLoggerFinderImpl(finder);
}

HIVTP_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    nbCreators = 0;
    try
    {
        static hivtp::ScoreCreator scoreCreator;
        static hivtp::SelectCreator selectCreator;
        static nvinfer1::IPluginCreatorInterface* const creators[] = {&scoreCreator, &selectCreator};
        nbCreators = 2;
        return creators;
    }
    catch (...)
    {
        hivtp::logCaught("getCreators");
    }
    return nullptr;
}

#if HIVTP_STATIC_REGISTRATION
using hivtp::ScoreCreator;
using hivtp::SelectCreator;
REGISTER_TENSORRT_PLUGIN(ScoreCreator);
REGISTER_TENSORRT_PLUGIN(SelectCreator);
#endif

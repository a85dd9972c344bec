/*
 * hivtp TensorRT plugins: names, logging and the error model shared by every file.
 *
 * Error model: validation throws hivtp::PluginError (never aborts); every noexcept TensorRT entry
 * point catches, logs through the ILogger found by setLoggerFinder (stderr when none was given)
 * and returns nullptr / -1 / false.
 */
#pragma once

#include "NvInferRuntime.h"

#include <cuda_runtime_api.h>

// Built against TensorRT 10 headers (the IPluginV3 ABI of TensorRT-LLM 1.2.1's TensorRT 10.14).
static_assert(NV_TENSORRT_MAJOR == 10, "hivtp plugins target TensorRT 10.x headers");
// kernel-lens' copy of the headers adds members to VExecutionContext behind this macro; defined,
// it would change a vtable layout libnvinfer does not have.
#if defined(ENABLE_FEATURE_DISABLE_RUNTIME_ALLOCATION) && ENABLE_FEATURE_DISABLE_RUNTIME_ALLOCATION
#error "ENABLE_FEATURE_DISABLE_RUNTIME_ALLOCATION must stay undefined: it is not part of TensorRT 10.14's ABI"
#endif

#include <sstream>
#include <stdexcept>
#include <string>

namespace hivtp
{

// Plugin identity, defined once: ONNX op_type = plugin name, node domain = namespace.
constexpr char const* kPLUGIN_NAMESPACE = "hivtp";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kSCORE_NAME = "Score";
constexpr char const* kSELECT_NAME = "Select";

class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

//! Throw a PluginError with the streamed message when `cond` is false.
#define HIVTP_VALIDATE(cond, msg)                                                                                      \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::ostringstream hivtpOss_;                                                                              \
            hivtpOss_ << msg;                                                                                          \
            throw ::hivtp::PluginError(hivtpOss_.str());                                                               \
        }                                                                                                              \
    } while (0)

//! Throw a PluginError naming the call when a CUDA runtime call fails.
#define HIVTP_CUDA_CHECK(call)                                                                                         \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const hivtpStatus_ = (call);                                                                       \
        if (hivtpStatus_ != cudaSuccess)                                                                               \
        {                                                                                                              \
            std::ostringstream hivtpOss_;                                                                              \
            hivtpOss_ << #call << " failed: " << cudaGetErrorName(hivtpStatus_) << " ("                               \
                      << cudaGetErrorString(hivtpStatus_) << ")";                                                      \
            throw ::hivtp::PluginError(hivtpOss_.str());                                                               \
        }                                                                                                              \
    } while (0)

void setLoggerFinderImpl(nvinfer1::ILoggerFinder* finder) noexcept;
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
inline void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}
inline void logWarning(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kWARNING, message);
}

//! Log the exception in flight as "<where>: <what>"; call only inside a catch block.
void logCaught(char const* where) noexcept;

//! The same with where = "<scope>::<method>", or "<scope>::<method>(<detail>)" when detail is not nullptr.
//! Builds the name itself, so that callers (the shared plugin templates) need no allocation in their catch.
void logCaught(char const* scope, char const* method, char const* detail = nullptr) noexcept;

} // namespace hivtp

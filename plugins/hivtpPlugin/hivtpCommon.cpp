#include "hivtpCommon.h"

#include <atomic>
#include <cstdio>
#include <exception>

namespace hivtp
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setLoggerFinderImpl(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const line = std::string("[hivtp] ") + message;
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, line.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw out of a noexcept caller; nothing else can be done here.
    }
}

void logCaught(char const* where) noexcept
{
    try
    {
        throw;
    }
    catch (std::exception const& e)
    {
        logError(std::string(where) + ": " + e.what());
    }
    catch (...)
    {
        logError(std::string(where) + ": unknown exception");
    }
}

void logCaught(char const* scope, char const* method, char const* detail) noexcept
{
    try
    {
        std::string where = std::string(scope) + "::" + method;
        if (detail != nullptr)
            where += std::string("(") + detail + ")";
        logCaught(where.c_str()); // still inside the caller's catch: the exception in flight is the caller's
    }
    catch (...)
    {
        // Out of memory for the name: nothing else can be logged.
    }
}

} // namespace hivtp

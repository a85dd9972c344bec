/*
 * Format of the launcher table that generate_kernels.py writes (hivtpKernelTableData.h in the CMake
 * binary dir) from each Triton AOT compile's metadata. Nothing in it is typed by hand: kernel name,
 * num_warps, dynamic shared memory and parameter counts all come from the compiled kernels.
 */
#pragma once

#include <cstddef>
#include <cstdint>

namespace hivtp
{

//! Kind of one runtime kernel parameter, from Triton's signature type ("*fp16" -> kPTR, "i32" -> kI32...).
enum class ArgKind : int32_t
{
    kPTR = 0,
    kI32 = 1,
    kI64 = 2,
    kF32 = 3,
};

struct KernelArg
{
    char const* name; // Triton argument name (the contract between kernels/*.py and the launchers)
    ArgKind kind;
    char const* type; // Triton signature type as compiled: "*fp16", "*i32", "i32", "fp32"...
};

struct KernelConstexpr
{
    char const* name; // a tl.constexpr of the compile (block sizes the launch grid needs)
    int64_t value;
};

struct KernelEntry
{
    char const* kernel;     // aot.py contract name: "score", "score_reduce", "select", "gather"
    char const* variant;    // aot.py variant name, e.g. "score_fp16_d64" (unique per arch)
    char const* arch;       // "sm_80", "sm_90a", ...
    char const* kernelName; // entry name inside the cubin = the Triton function ("select_kernel")
    unsigned char const* cubin;
    size_t cubinSize;
    int32_t numWarps;    // block = numWarps * 32 threads
    int32_t numCtas;     // must be 1 (the generator refuses clusters)
    int32_t sharedBytes; // dynamic shared memory per launch
    int32_t numParams;   // all cubin parameters, Triton's hidden trailing scratch pointers included
    KernelArg const* args;
    int32_t numArgs; // runtime parameters; numParams - numArgs hidden pointers are passed as nullptr
    KernelConstexpr const* constexprs;
    int32_t numConstexprs;
    char const* grid; // aot.py's launch grid formula, e.g. "(B, 1, 1)"; the C++ launcher checks it is the one it implements
};

struct KernelTable
{
    KernelEntry const* entries;
    int32_t count;
    char const* source; // how the table was produced: "triton", "json:<file>" or "empty"
};

//! The table compiled into this library (hivtpKernelTable.cpp includes the generated data).
KernelTable builtinKernelTable();

} // namespace hivtp

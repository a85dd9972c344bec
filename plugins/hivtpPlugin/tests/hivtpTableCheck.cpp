/*
 * Checks the kernel table compiled into libhivtp_plugin.so (HIVTP_KERNEL_SOURCE) against the C++
 * launchers, without a GPU: every entry must be a kernel a launcher implements, with the same grid
 * formula and argument names, a parseable arch and an embedded cubin. Prints one line per entry.
 */
#include "hivtpKernels.h"
#include "hivtpLaunch.h"

#include <cstdio>
#include <exception>
#include <string>

int main()
{
    hivtp::KernelTable const table = hivtp::builtinKernelTable();
    int failures = 0;
    for (int32_t i = 0; i < table.count; ++i)
    {
        hivtp::KernelEntry const& e = table.entries[i];
        std::string problem;
        try
        {
            hivtp::checkContract(e);
            bool runsSomewhere = false;
            for (int32_t major = 1; major <= 15; ++major)
                for (int32_t minor = 0; minor <= 9; ++minor)
                    runsSomewhere = runsSomewhere || hivtp::archRunsOn(e.arch, major, minor);
            if (!runsSomewhere)
                problem = std::string("arch ") + e.arch + " matches no compute capability";
            else if (e.cubin == nullptr || e.cubinSize == 0)
                problem = "no cubin";
            // PTX ("compute_XY") must be NUL-terminated text; a cubin is an ELF file (\x7fELF)
            else if (std::string(e.arch).rfind("compute_", 0) == 0)
            {
                if (e.cubin[e.cubinSize - 1] != 0)
                    problem = "PTX is not NUL-terminated";
            }
            else if (table.source == std::string("triton") && !(e.cubin[0] == 0x7f && e.cubin[1] == 'E'))
                problem = "cubin is not an ELF image";
        }
        catch (std::exception const& ex)
        {
            problem = ex.what();
        }
        failures += problem.empty() ? 0 : 1;
        std::printf("%-5s %-14s %-26s %-8s %8zu B  warps %d  smem %d  params %d%s%s\n", problem.empty() ? "ok" : "FAIL",
            e.kernel, e.variant, e.arch, e.cubinSize, e.numWarps, e.sharedBytes, e.numParams,
            problem.empty() ? "" : "  ", problem.c_str());
    }
    std::printf("%s: %d kernel(s) from '%s', %d problem(s)\n", failures ? "FAILED" : "OK", table.count, table.source,
        failures);
    return failures ? 1 : 0;
}

#include "hivtpKernelTable.h"

// Generated into the CMake binary dir by generate_kernels.py; defines kKernelEntries,
// kNumKernelEntries and kKernelTableSource in namespace hivtp::generated.
#include "hivtpKernelTableData.h"

namespace hivtp
{
KernelTable builtinKernelTable()
{
    return KernelTable{generated::kKernelEntries, generated::kNumKernelEntries, generated::kKernelTableSource};
}
} // namespace hivtp

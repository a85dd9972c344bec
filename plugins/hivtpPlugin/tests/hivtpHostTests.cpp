/*
 * Host unit tests of the hivtp plugins: no GPU, no TensorRT library, no real cubins.
 *
 *   hivtp_host_tests <plugin_geometry_cases.json>   run every test (exit 1 on any failure)
 *   hivtp_host_tests --print-fields                  the creators' fields as JSON (tests/test_plugin_fields.py)
 *
 * CUDA is replaced by CudaHooks (fake device, fake kernel handles) and IExprBuilder by a constant-folding
 * fake, so creation, formats, shapes, workspace and serialization run exactly as in TensorRT.
 */
#include "hivtpTestSupport.h"

#include <algorithm>
#include <fstream>
#include <functional>

namespace hivtp_test
{
std::vector<std::pair<char const*, std::function<void()>>> pluginTests(); // hivtpPluginTests.cpp
int printFields();                                                         // hivtpPluginTests.cpp

namespace
{
// ------------------------------------------------------------------------------------------------ tests
void testGeometryCases(std::string const& path)
{
    std::ifstream in(path);
    CHECK(in.good());
    if (!in.good())
        return;
    std::stringstream buffer;
    buffer << in.rdbuf();
    Json const cases = JsonParser(buffer.str()).parse()["cases"];
    CHECK(cases.items.size() >= 8);
    for (Json const& c : cases.items)
    {
        gCurrentTest = "geometry " + c["name"].text;
        SelectParams p;
        auto const regions = c["regions"].ints();
        p.regions = {regions[0], regions[1]};
        p.window = static_cast<int32_t>(c["window"].number);
        p.budget = c["budget"].kind == Json::kNull ? 0 : static_cast<int32_t>(c["budget"].number);
        auto const grid = c["grid"].ints();
        // as a float64 field and as the float32 ONNX attribute (widened back): same geometry either way
        for (double ratio : {c["global_ratio"].number, widenFloat32(static_cast<float>(c["global_ratio"].number))})
        {
            p.globalRatio = ratio;
            Geometry const g = selectionGeometry(grid[0], grid[1], p);
            Json const& want = c["expected"];
            CHECK(g.regionOf == want["region_of"].ints());
            CHECK(g.regionStart == want["region_start"].ints());
            CHECK(g.regionQuota == want["region_quota"].ints());
            CHECK(g.windowOf == want["window_of"].ints());
            CHECK(windowStarts(g) == want["window_start"].ints());
            CHECK(g.numWindows == static_cast<int32_t>(want["num_windows"].number));
            CHECK(g.numGlobal == static_cast<int32_t>(want["num_global"].number));
            CHECK(g.kmax == static_cast<int32_t>(want["kmax"].number));
            CHECK(selectKmax(grid[0], grid[1], p) == g.kmax);
        }
    }
}

void testGeometryFunctions()
{
    gCurrentTest = "geometry functions";
    CHECK((splitPoints(24, 2) == std::vector<int32_t>{0, 12, 24}));
    CHECK((splitPoints(5, 3) == std::vector<int32_t>{0, 1, 3, 5}));
    CHECK((splitPoints(2, 4) == std::vector<int32_t>{0, 1, 2})); // parts capped by size
    SelectParams p;
    p.globalRatio = 0.29;
    CHECK(globalQuota(p, 100, 4) == 29); // 0.29 * 100 = 28.999999999999996 in double
    p.globalRatio = widenFloat32(0.29f);
    CHECK(p.globalRatio == 0.29);
    CHECK(globalQuota(p, 100, 4) == 29);
    p.budget = 64;
    CHECK(globalQuota(p, 144, 4) == 8); // 64 // (2 * 4)
    CHECK(globalQuota(p, 3, 4) == 3);   // capped by the region
    CHECK(widenFloat32(0.25f) == 0.25);
    CHECK(widenFloat32(1.0f) == 1.0);
    CHECK((squareGrid(576) == std::pair<int32_t, int32_t>{24, 24}));
    CHECK((squareGrid(729) == std::pair<int32_t, int32_t>{27, 27}));
    CHECK_THROWS(squareGrid(577), "not a square grid");
    CHECK_THROWS(squareGrid(0), "square grid");
    CHECK((resolveGrid(4, 6, 24) == std::pair<int32_t, int32_t>{4, 6}));
    CHECK((resolveGrid(4, 6, -1) == std::pair<int32_t, int32_t>{4, 6}));
    CHECK((resolveGrid(0, 0, 16) == std::pair<int32_t, int32_t>{4, 4}));
    CHECK_THROWS(resolveGrid(4, 6, 25), "grid_h x grid_w");
    CHECK_THROWS(resolveGrid(4, 0, 16), "both");
    SelectParams bad;
    bad.window = 0;
    CHECK_THROWS(selectionGeometry(4, 4, bad), "window");
    CHECK_THROWS(selectionGeometry(0, 4, SelectParams{}), "grid");
    // paper defaults on 24x24: 4 regions x 36 global + 4 x 36 windows of 2x2
    CHECK(selectKmax(24, 24, SelectParams{}) == 288);
    CHECK(ceilDiv(577, 16) == 37);
}

void testPlans()
{
    gCurrentTest = "launch plans";
    ScorePlan const s = planScore(3, 2, 16, 577, 64, 32); // L = 3, B = 2, H = 16: ViT-L/14-336
    CHECK(s.rowBlocks == 10 && s.partialRows == 3 * 16 * 10);
    CHECK(s.grid.x == 10 && s.grid.y == 48 && s.grid.z == 2);
    CHECK(s.reduceGrid.x == 18 && s.reduceGrid.y == 2 && s.reduceGrid.z == 1);
    CHECK(s.workspaceBytes == align256(2 * 3 * 16 * 10 * 576 * 4)); // partials [B, L * H * M, P]
    ScorePlan const one = planScore(1, 1, 1, 2, 16, 256);
    CHECK(one.grid.x == 1 && one.grid.y == 1 && one.grid.z == 1 && one.partialRows == 1);
    CHECK(one.reduceGrid.x == 1 && one.workspaceBytes == 256);
    CHECK_THROWS(planScore(3, 2, 16, 1, 16, 64), "N = 1");
    CHECK(planScore(3, 2, 16, 1025, 64, 32).rowBlocks == 17); // key tiles are streamed: N past 1024 is fine
    CHECK_THROWS(planScore(3, 2, 16, 4098, 64, 32), "N = 4098");
    CHECK_THROWS(planScore(3, 70000, 16, 577, 16, 64), "B = 70000");
    CHECK_THROWS(planScore(300, 2, 300, 577, 16, 64), "L * H");
    CHECK_THROWS(planScore(3, 2, 0, 577, 16, 64), "L * H");
    CHECK_THROWS(planScore(3, 2048, 16, 1024, 16, 64), "int32 offsets"); // 2048 * 3072 * 1023 partials

    SelectPlan const wide = planSelect(3, 288, 1024, 32, 128, 8, 8, 8);
    CHECK(wide.grid.x == 3 && wide.grid.y == 1);
    CHECK(wide.gatherGrid.x == 9 && wide.gatherGrid.y == 8 && wide.gatherGrid.z == 3);
    CHECK(wide.indicesOffset == 0);
    CHECK(wide.countsOffset == align256(3 * 288 * 8));
    CHECK(wide.stagesOffset == wide.countsOffset + 256);
    CHECK(wide.workspaceBytes == wide.stagesOffset + align256(3 * 288 * 8));
    CHECK(wide.stagesOffset % 16 == 0 && wide.countsOffset % 16 == 0);
    SelectPlan const narrow = planSelect(3, 288, 1024, 32, 128, 4, 4, 4);
    CHECK(narrow.indicesOffset == -1 && narrow.countsOffset == -1 && narrow.stagesOffset == 0);
    CHECK(narrow.workspaceBytes == align256(3 * 288 * 4));
    CHECK_THROWS(planSelect(0, 288, 1024, 32, 128, 8, 8, 8), "B = 0");

    Dims const q = makeDims({3, 2, 16, 577, 64});
    auto const st = contiguousStrides(q);
    CHECK(st[0] == 2 * 16 * 577 * 64 && st[1] == 16 * 577 * 64 && st[2] == 577 * 64 && st[3] == 64 && st[4] == 1);
}

void testPackedGeometry()
{
    gCurrentTest = "packed geometry";
    SelectParams p;
    p.regions = {2, 3};
    Geometry const g = selectionGeometry(27, 27, p); // P = 729, R = 6: sizes that are no multiple of 4
    std::vector<int32_t> const starts = windowStarts(g);
    PackedGeometry const packed = packGeometry(g, starts);
    std::vector<int32_t> const* tables[] = {&g.regionOf, &g.regionStart, &g.regionQuota, &g.windowOf, &starts};
    for (size_t i = 0; i < 5; ++i)
    {
        CHECK(packed.offsets[i] % 64 == 0); // 256-byte aligned starts (the kernels need 16)
        CHECK(std::equal(tables[i]->begin(), tables[i]->end(), packed.values.begin() + packed.offsets[i]));
        if (i > 0)
            CHECK(packed.offsets[i] >= packed.offsets[i - 1] + tables[i - 1]->size());
    }
    CHECK(packed.values.size() % 64 == 0 && packed.values.size() >= packed.offsets[4] + starts.size());
}

void testArchs()
{
    gCurrentTest = "arch matching";
    CHECK(archRunsOn("sm_80", 8, 0));
    CHECK(archRunsOn("sm_80", 8, 6));
    CHECK(archRunsOn("sm_80", 8, 9));
    CHECK(!archRunsOn("sm_86", 8, 0));
    CHECK(!archRunsOn("sm_80", 9, 0));
    CHECK(archRunsOn("sm_90a", 9, 0));
    CHECK(!archRunsOn("sm_90a", 10, 0));
    CHECK(archRunsOn("sm_100a", 10, 0));
    CHECK(!archRunsOn("sm_100a", 10, 3));
    CHECK(archRunsOn("sm_100f", 10, 3));
    CHECK(archRunsOn("sm_120a", 12, 0));
    CHECK(!archRunsOn("sm_120a", 12, 1));
    CHECK(!archRunsOn("garbage", 8, 0));
    CHECK(!archRunsOn("sm_9", 9, 0));
    CHECK(archRunsOn("compute_80", 8, 0) && archRunsOn("compute_80", 8, 9));
    CHECK(archRunsOn("compute_80", 10, 3) && archRunsOn("compute_80", 12, 1)); // PTX: forward compatible
    CHECK(!archRunsOn("compute_80", 7, 5));
    CHECK(!archRunsOn("compute_80a", 8, 0));

    KernelTable const table = builtinKernelTable();
    CHECK(table.count == 15); // 13 records, two of them with PTX
    KernelEntry const* e = selectEntry(table, "score_fp16_d64", 8, 6);
    CHECK(e != nullptr && std::strcmp(e->arch, "sm_80") == 0);
    e = selectEntry(table, "score_fp16_d64", 9, 0);
    CHECK(e != nullptr && std::strcmp(e->arch, "sm_90a") == 0);
    CHECK(selectEntry(table, "score_fp16_d64", 10, 0) == nullptr);
    CHECK(selectEntry(table, "score_fp32_d64", 9, 0) == nullptr);
    CHECK(archsOf(table, "score") == "sm_80, sm_80, sm_80, sm_90a");
    CHECK(archsOf(table, "nothing") == "none");
    e = selectEntry(table, "select_p1024", 8, 6); // a cubin beats PTX
    CHECK(e != nullptr && std::strcmp(e->arch, "sm_80") == 0);
    e = selectEntry(table, "select_p1024", 9, 0);
    CHECK(e != nullptr && std::strcmp(e->arch, "sm_90a") == 0);
    e = selectEntry(table, "select_p1024", 10, 3); // no cubin for 10.3: the sm_80 PTX
    CHECK(e != nullptr && std::strcmp(e->arch, "compute_80") == 0 && e->cubin[e->cubinSize - 1] == 0);
    CHECK(selectEntry(table, "select_p256", 10, 3) == nullptr);
}

void testContractsAndArgs()
{
    gCurrentTest = "contracts and kernel args";
    KernelTable const table = builtinKernelTable();
    for (int32_t i = 0; i < table.count; ++i)
        checkContract(table.entries[i]); // throws on a mismatch: the test table follows aot.py

    KernelEntry regridded = table.entries[0];
    regridded.grid = "(B, 1, 1)";
    CHECK_THROWS(checkContract(regridded), "grid");
    KernelEntry unknown = table.entries[0];
    unknown.kernel = "mystery";
    CHECK_THROWS(checkContract(unknown), "no plugin launcher");
    KernelEntry fewer = table.entries[0];
    fewer.numArgs -= 1;
    CHECK_THROWS(checkContract(fewer), "disagree");

    KernelEntry const* select = selectEntry(table, "select_p1024", 8, 6);
    CHECK(select != nullptr);
    if (select == nullptr)
        return;
    alignas(16) static char buffer[64];
    KernelArgs args(*select);
    for (char const* name : {"scores_ptr", "region_of_ptr", "region_start_ptr", "region_quota_ptr", "window_of_ptr",
             "window_start_ptr", "indices_ptr", "counts_ptr", "stages_ptr"})
        args.ptr(name, buffer);
    args.integer("P", 576).integer("KMAX", 288).integer("IS_BUDGET", 0);
    CHECK_THROWS(args.pointers(), "stride_sb");
    args.integer("stride_sb", 576);
    void** params = args.pointers();
    CHECK(select->numParams == select->numArgs + 2);
    CHECK(*static_cast<void**>(params[0]) == buffer);
    CHECK(*static_cast<int32_t*>(params[9]) == 576);
    CHECK(*static_cast<void**>(params[select->numParams - 1]) == nullptr); // hidden scratch pointers
    CHECK(*static_cast<void**>(params[select->numParams - 2]) == nullptr);
    CHECK_THROWS(args.integer("P", int64_t{1} << 40), "overflows");
    CHECK_THROWS(args.ptr("scores_ptr", buffer + 4), "16-byte aligned");
    CHECK_THROWS(args.ptr("nope", buffer), "no pointer argument");
    CHECK_THROWS(args.integer("BLOCK_P", 512), "compiled for 1024");
    args.integer("BLOCK_P", 1024); // a constexpr given its compiled value is accepted
    CHECK_THROWS(args.real("P", 1.0f), "no fp32 argument");
}

void testVariantChoice()
{
    gCurrentTest = "variant choice";
    useDevice(0, 8, 6);
    auto const kernels = loadKernels({kSCORE_KERNEL, kSCORE_REDUCE_KERNEL, kSELECT_KERNEL, kGATHER_KERNEL});
    CHECK(kernels->kernels.size() == 9); // the sm_80 entries of the test table
    auto blockOf = [](LoadedKernel const* k, char const* name) { return k ? constexprValue(*k->entry, name, -1) : -1; };
    auto variantOf = [](LoadedKernel const* k) { return std::string(k ? k->entry->variant : "none"); };
    CHECK(variantOf(pickScore(*kernels, DataType::kHALF, 577, 64)) == "score_fp16_d64");
    CHECK(variantOf(pickScore(*kernels, DataType::kHALF, 2, 64)) == "score_fp16_d64"); // one variant, every N
    CHECK(variantOf(pickScore(*kernels, DataType::kHALF, 4097, 64)) == "score_fp16_d64");
    CHECK(variantOf(pickScore(*kernels, DataType::kHALF, 65, 16)) == "score_fp16_d16");
    CHECK(variantOf(pickScore(*kernels, DataType::kFLOAT, 300, 64)) == "score_fp32_d64");
    CHECK(pickScore(*kernels, DataType::kHALF, 4098, 64) == nullptr);
    CHECK(pickScore(*kernels, DataType::kHALF, 1, 64) == nullptr);
    CHECK(pickScore(*kernels, DataType::kHALF, 577, 32) == nullptr);
    CHECK(pickScore(*kernels, DataType::kBF16, 577, 64) == nullptr);
    CHECK(pickScoreReduce(*kernels) != nullptr);
    CHECK(minScoreBlockM(*kernels, DataType::kHALF, 64) == 64);
    CHECK(minScoreBlockM(*kernels, DataType::kBF16, 64) == -1);
    CHECK(blockOf(pickSelect(*kernels, 576), "BLOCK_P") == 1024);
    CHECK(blockOf(pickSelect(*kernels, 64), "BLOCK_P") == 64);
    CHECK(blockOf(pickSelect(*kernels, 65), "BLOCK_P") == 256);
    CHECK(pickSelect(*kernels, 1025) == nullptr);
    LoadedKernel const* b16 = pickGather(*kernels, DataType::kBF16);
    CHECK(b16 != nullptr && std::strcmp(b16->entry->variant, "gather_b16") == 0);
    CHECK(pickGather(*kernels, DataType::kHALF) == b16);
    LoadedKernel const* b32 = pickGather(*kernels, DataType::kFLOAT);
    CHECK(b32 != nullptr && std::strcmp(b32->entry->variant, "gather_b32") == 0);
    CHECK(pickGather(*kernels, DataType::kINT8) == nullptr);
    LoadedKernel const* select = pickSelect(*kernels, 576);
    if (select && b16)
    {
        SelectPlan const a = planSelectFor(*select->entry, *b16->entry, 2, 288, 1024);
        SelectPlan const b = planSelect(2, 288, 1024, 32, 128, 8, 8, 8);
        CHECK(a.workspaceBytes == b.workspaceBytes && a.countsOffset == b.countsOffset);
        CHECK(a.gatherGrid.x == 9 && a.gatherGrid.y == 8 && a.gatherGrid.z == 2);
    }
    useDevice(1, 9, 0); // the sm_90a entries: no fp32 score, no 32-bit gather
    auto const hopper = loadKernels({kSCORE_KERNEL, kSELECT_KERNEL, kGATHER_KERNEL});
    CHECK(hopper->ccMajor == 9 && hopper->kernels.size() == 4);
    CHECK(pickScore(*hopper, DataType::kFLOAT, 577, 64) == nullptr);
    CHECK(pickGather(*hopper, DataType::kFLOAT) == nullptr);
    CHECK(pickGather(*hopper, DataType::kHALF) != nullptr);
    useDevice(0, 8, 6);
}
} // namespace
} // namespace hivtp_test

using namespace hivtp_test;

int main(int argc, char** argv)
{
    setCudaHooksForTesting(&gHooks);
    setLoggerFinder(&gFinder);
    if (argc > 1 && std::string(argv[1]) == "--print-fields")
        return printFields();
    if (argc < 2)
    {
        std::fprintf(stderr, "usage: %s <plugin_geometry_cases.json> | --print-fields\n", argv[0]);
        return 2;
    }
    std::vector<std::pair<char const*, std::function<void()>>> tests{
        {"geometry cases", [&] { testGeometryCases(argv[1]); }},
        {"geometry functions", testGeometryFunctions},
        {"plans", testPlans},
        {"packed geometry", testPackedGeometry},
        {"archs", testArchs},
        {"contracts", testContractsAndArgs},
        {"variant choice", testVariantChoice},
    };
    for (auto& t : pluginTests())
        tests.push_back(std::move(t));
    for (auto const& [name, fn] : tests)
    {
        gCurrentTest = name;
        try
        {
            fn();
        }
        catch (std::exception const& e)
        {
            ++gFailures;
            std::fprintf(stderr, "FAIL [%s] unexpected exception: %s\n", gCurrentTest.c_str(), e.what());
        }
        std::string const stray = gFinder.logger.take();
        if (!stray.empty())
            std::fprintf(stderr, "note [%s] unchecked log lines:\n%s", name, stray.c_str());
    }
    std::printf("%s: %d failure(s) in %zu test groups\n", gFailures ? "FAILED" : "OK", gFailures, tests.size());
    return gFailures ? 1 : 0;
}

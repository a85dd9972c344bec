/*
 * Host tests of the creators and plugins: createPlugin (valid, lenient, invalid fields), the
 * no-cubin error, serialization round trips, output types, formats, shapes, configure and workspace.
 */
#include "hivtpTestSupport.h"

#include <functional>

namespace hivtp_test
{
struct Creators
{
    ScoreCreator score;
    SelectCreator select;
};

void testCreators()
{
    gCurrentTest = "creators";
    int32_t n = 0;
    IPluginCreatorInterface* const* all = getCreators(n);
    CHECK(n == 2 && all != nullptr);
    if (n != 2)
        return;
    auto* score = static_cast<IPluginCreatorV3One*>(all[0]);
    auto* select = static_cast<IPluginCreatorV3One*>(all[1]);
    CHECK(std::strcmp(score->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    CHECK(std::strcmp(score->getPluginName(), "Score") == 0);
    CHECK(std::strcmp(select->getPluginName(), "Select") == 0);
    for (auto* c : {score, select})
    {
        CHECK(std::strcmp(c->getPluginVersion(), "1") == 0);
        CHECK(std::strcmp(c->getPluginNamespace(), "hivtp") == 0);
    }
    CHECK(score->getFieldNames()->nbFields == 1);
    CHECK(select->getFieldNames()->nbFields == 6);
}

void testCreateValid()
{
    gCurrentTest = "createPlugin valid";
    useDevice(0, 8, 6);
    Creators c;
    auto score = create<ScorePlugin>(c.score, Fields().add<int32_t>("score_layers", PluginFieldType::kINT32, {6, 7, 8}));
    CHECK(score != nullptr);
    if (score)
        CHECK((score->config().scoreLayers == std::vector<int32_t>{6, 7, 8}));

    Fields f32;
    f32.add<int32_t>("regions", PluginFieldType::kINT32, {2, 3})
        .add<float>("global_ratio", PluginFieldType::kFLOAT32, {0.29f})
        .add<int32_t>("window", PluginFieldType::kINT32, {3})
        .add<int32_t>("budget", PluginFieldType::kINT32, {0})
        .add<int32_t>("grid_h", PluginFieldType::kINT32, {20})
        .add<int32_t>("grid_w", PluginFieldType::kINT32, {30});
    auto select = create<SelectPlugin>(c.select, f32);
    CHECK(select != nullptr);
    if (!select)
        return;
    SelectConfig const& cfg = select->config();
    CHECK(cfg.params.regions[0] == 2 && cfg.params.regions[1] == 3);
    CHECK(cfg.params.globalRatio == 0.29);
    CHECK(cfg.params.window == 3 && cfg.params.budget == 0 && cfg.gridH == 20 && cfg.gridW == 30);

    // lenient: the same values as kINT64 / kFLOAT64 give the same config
    Fields f64;
    f64.add<int64_t>("regions", PluginFieldType::kINT64, {2, 3})
        .add<double>("global_ratio", PluginFieldType::kFLOAT64, {0.29})
        .add<int64_t>("window", PluginFieldType::kINT64, {3})
        .add<int64_t>("budget", PluginFieldType::kINT64, {0})
        .add<int64_t>("grid_h", PluginFieldType::kINT64, {20})
        .add<int64_t>("grid_w", PluginFieldType::kINT64, {30});
    auto select64 = create<SelectPlugin>(c.select, f64);
    CHECK(select64 != nullptr);
    if (select64)
    {
        SelectConfig const& c64 = select64->config();
        CHECK(c64.params.regions == cfg.params.regions && c64.params.globalRatio == cfg.params.globalRatio);
        CHECK(c64.params.window == cfg.params.window && c64.gridH == 20 && c64.gridW == 30);
    }
    auto score64 = create<ScorePlugin>(c.score, Fields().add<int64_t>("score_layers", PluginFieldType::kINT64, {1, 2}));
    CHECK(score64 != nullptr && (score64->config().scoreLayers == std::vector<int32_t>{1, 2}));

    // absent fields take the defaults of plugins/plugin_fields.py
    auto defaults = create<SelectPlugin>(c.select, Fields());
    CHECK(defaults != nullptr);
    if (defaults)
    {
        SelectConfig const& d = defaults->config();
        CHECK(d.params.regions[0] == 2 && d.params.regions[1] == 2 && d.params.globalRatio == 0.25);
        CHECK(d.params.window == 2 && d.params.budget == 0 && d.gridH == 0 && d.gridW == 0);
    }
    CHECK(gFinder.logger.take().empty());
}

void testCreateInvalid()
{
    gCurrentTest = "createPlugin invalid";
    useDevice(0, 8, 6);
    Creators c;
    struct Case
    {
        char const* what;
        Fields fields;
        char const* logged;
    };
    std::vector<Case> selectCases;
    selectCases.push_back({"ratio > 1", Fields().add<float>("global_ratio", PluginFieldType::kFLOAT32, {1.5f}), "global_ratio"});
    selectCases.push_back({"3 regions", Fields().add<int32_t>("regions", PluginFieldType::kINT32, {2, 2, 2}), "regions"});
    selectCases.push_back({"zero region", Fields().add<int32_t>("regions", PluginFieldType::kINT32, {0, 2}), "regions"});
    selectCases.push_back({"window 0", Fields().add<int32_t>("window", PluginFieldType::kINT32, {0}), "window"});
    selectCases.push_back({"budget < 0", Fields().add<int32_t>("budget", PluginFieldType::kINT32, {-1}), "budget"});
    selectCases.push_back({"unknown", Fields().add<int32_t>("windw", PluginFieldType::kINT32, {2}), "unknown field 'windw'"});
    selectCases.push_back({"char type", Fields().add<char>("window", PluginFieldType::kCHAR, {'2'}), "kINT32 or kINT64"});
    selectCases.push_back({"int ratio", Fields().add<int32_t>("global_ratio", PluginFieldType::kINT32, {1}), "kFLOAT32 or kFLOAT64"});
    selectCases.push_back({"grid_h only", Fields().add<int32_t>("grid_h", PluginFieldType::kINT32, {24}), "grid_h and grid_w"});
    selectCases.push_back({"int64 overflow", Fields().add<int64_t>("window", PluginFieldType::kINT64, {int64_t{1} << 40}), "int32"});
    selectCases.push_back({"twice", Fields()
                                        .add<int32_t>("window", PluginFieldType::kINT32, {2})
                                        .add<int32_t>("window", PluginFieldType::kINT32, {3}),
        "given twice"});
    selectCases.push_back({"two windows", Fields().add<int32_t>("window", PluginFieldType::kINT32, {2, 3}), "one int"});
    for (auto const& k : selectCases)
    {
        gCurrentTest = std::string("createPlugin invalid: ") + k.what;
        auto p = create<SelectPlugin>(c.select, k.fields);
        CHECK(p == nullptr);
        std::string const log = gFinder.logger.take();
        CHECK(log.find(k.logged) != std::string::npos);
        CHECK(log.find("Select::createPlugin") != std::string::npos);
    }
    gCurrentTest = "createPlugin invalid: score";
    CHECK(create<ScorePlugin>(c.score, Fields().add<int32_t>("score_layers", PluginFieldType::kINT32, {6, 6})) == nullptr);
    CHECK(gFinder.logger.take().find("repeat") != std::string::npos);
    CHECK(create<ScorePlugin>(c.score, Fields().add<int32_t>("score_layers", PluginFieldType::kINT32, {})) == nullptr);
    CHECK(gFinder.logger.take().find("non-empty") != std::string::npos);
    CHECK(create<ScorePlugin>(c.score, Fields().add<int32_t>("score_layers", PluginFieldType::kINT32, {-1})) == nullptr);
    CHECK(gFinder.logger.take().find(">= 0") != std::string::npos);
}

void testNoCubinForDevice()
{
    gCurrentTest = "no cubin for the device";
    Creators c;
    useDevice(3, 7, 5);
    CHECK(create<SelectPlugin>(c.select, Fields()) == nullptr);
    std::string log = gFinder.logger.take();
    CHECK(log.find("compute capability 7.5") != std::string::npos);
    CHECK(log.find("sm_80, sm_80, sm_80, compute_80, sm_90a") != std::string::npos); // the archs held for select
    useDevice(4, 10, 0);
    CHECK(create<ScorePlugin>(c.score, Fields()) == nullptr);
    log = gFinder.logger.take();
    CHECK(log.find("compute capability 10.0") != std::string::npos);
    CHECK(log.find("Score::createPlugin") != std::string::npos);
    useDevice(5, 10, 3); // no cubin, but the sm_80 PTX of select_p1024 and gather_b16 (driver JIT)
    auto jit = create<SelectPlugin>(c.select, Fields());
    CHECK(jit != nullptr);
    CHECK(create<ScorePlugin>(c.score, Fields()) == nullptr);
    CHECK(gFinder.logger.take().find("compute capability 10.3") != std::string::npos);
    if (jit)
    {
        DynamicPluginTensorDesc io[5] = {desc({2, 576}, DataType::kFLOAT), desc({2, 576, 64}, DataType::kHALF),
            desc({2, 288, 64}, DataType::kHALF), desc({2}, DataType::kINT32), desc({2, 288}, DataType::kINT32)};
        CHECK(jit->supportsFormatCombination(1, io, 2, 3));  // fp16 features: gather_b16 PTX
        io[1].desc.type = DataType::kFLOAT;
        CHECK(!jit->supportsFormatCombination(1, io, 2, 3)); // no 32-bit gather for 10.3
    }
    useDevice(0, 8, 6);
}

void testSerializationRoundTrip()
{
    gCurrentTest = "serialization round trip";
    useDevice(0, 8, 6);
    Creators c;
    Fields f;
    f.add<int32_t>("regions", PluginFieldType::kINT32, {3, 2})
        .add<float>("global_ratio", PluginFieldType::kFLOAT32, {0.3f})
        .add<int32_t>("budget", PluginFieldType::kINT32, {100});
    auto built = create<SelectPlugin>(c.select, f);
    CHECK(built != nullptr);
    if (!built)
        return;
    // configurePlugin resolves grid 0 x 0 from the build-time P, and serialization carries it
    DynamicPluginTensorDesc in[2] = {desc({2, 576}, DataType::kFLOAT), desc({2, 576, 1024}, DataType::kHALF)};
    DynamicPluginTensorDesc out[3] = {desc({2, 100, 1024}, DataType::kHALF), desc({2}, DataType::kINT32),
        desc({2, 100}, DataType::kINT32)};
    CHECK(built->configurePlugin(in, 2, out, 3) == 0);
    PluginFieldCollection const* fc = built->getFieldsToSerialize();
    CHECK(fc != nullptr && fc->nbFields == 6);
    std::unique_ptr<SelectPlugin> runtime(static_cast<SelectPlugin*>(c.select.createPlugin("node", fc, TensorRTPhase::kRUNTIME)));
    CHECK(runtime != nullptr);
    if (runtime)
    {
        SelectConfig const& r = runtime->config();
        CHECK(r.params.regions[0] == 3 && r.params.regions[1] == 2);
        CHECK(r.params.globalRatio == 0.3 && r.params.budget == 100 && r.params.window == 2);
        CHECK(r.gridH == 24 && r.gridW == 24);
    }

    auto score = create<ScorePlugin>(c.score, Fields().add<int32_t>("score_layers", PluginFieldType::kINT32, {4, 9}));
    CHECK(score != nullptr);
    if (!score)
        return;
    std::unique_ptr<IPluginV3> clone(score->clone());
    auto* cloned = static_cast<ScorePlugin*>(clone.get());
    fc = cloned->getFieldsToSerialize();
    std::unique_ptr<ScorePlugin> back(static_cast<ScorePlugin*>(c.score.createPlugin("node", fc, TensorRTPhase::kRUNTIME)));
    CHECK(back != nullptr && (back->config().scoreLayers == std::vector<int32_t>{4, 9}));
    CHECK(std::string(score->getPluginName()) == "Score" && std::string(score->getPluginNamespace()) == "hivtp");
    CHECK(score->getCapabilityInterface(PluginCapabilityType::kCORE) != nullptr);
    CHECK(score->getCapabilityInterface(PluginCapabilityType::kBUILD) != nullptr);
    CHECK(score->getCapabilityInterface(PluginCapabilityType::kRUNTIME) != nullptr);
}

void testScoreBuildInterface()
{
    gCurrentTest = "Score build interface";
    useDevice(0, 8, 6);
    Creators c;
    auto p = create<ScorePlugin>(c.score, Fields());
    CHECK(p != nullptr);
    if (!p)
        return;
    CHECK(p->getNbOutputs() == 1);
    DataType outType{};
    DataType const halfIn[2] = {DataType::kHALF, DataType::kHALF};
    CHECK(p->getOutputDataTypes(&outType, 1, halfIn, 2) == 0 && outType == DataType::kFLOAT);
    DataType const mixed[2] = {DataType::kHALF, DataType::kFLOAT};
    CHECK(p->getOutputDataTypes(&outType, 1, mixed, 2) == -1);
    CHECK(!gFinder.logger.take().empty());

    auto formats = [&](DataType q, DataType k, DataType o, TensorFormat fmt = TensorFormat::kLINEAR) {
        DynamicPluginTensorDesc io[3] = {desc({3, 2, 16, 577, 64}, q), desc({3, 2, 16, 577, 64}, k), desc({2, 576}, o)};
        io[0].desc.format = fmt;
        bool ok = true;
        for (int32_t pos = 0; pos < 3; ++pos)
            ok = ok && p->supportsFormatCombination(pos, io, 2, 1);
        return ok;
    };
    CHECK(formats(DataType::kHALF, DataType::kHALF, DataType::kFLOAT));
    CHECK(formats(DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT));
    CHECK(!formats(DataType::kBF16, DataType::kBF16, DataType::kFLOAT)); // the test table has no bf16 score
    CHECK(!formats(DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT));
    CHECK(!formats(DataType::kHALF, DataType::kHALF, DataType::kHALF));
    CHECK(!formats(DataType::kHALF, DataType::kHALF, DataType::kFLOAT, TensorFormat::kCHW32));

    FakeBuilder b;
    DimsExprs in[2] = {b.dims({3, 2, 16, 577, 64}), b.dims({3, 2, 16, 577, 64})};
    DimsExprs out[1];
    CHECK(p->getOutputShapes(in, 2, nullptr, 0, out, 1, b) == 0);
    CHECK((values(out[0]) == std::vector<int64_t>{2, 576}));
    DimsExprs rank4[2] = {b.dims({2, 16, 577, 64}), b.dims({2, 16, 577, 64})};
    CHECK(p->getOutputShapes(rank4, 2, nullptr, 0, out, 1, b) == -1);
    CHECK(gFinder.logger.take().find("[L, B, H, N, d]") != std::string::npos);

    DynamicPluginTensorDesc cin[2] = {desc({3, 2, 16, 577, 64}, DataType::kHALF), desc({3, 2, 16, 577, 64}, DataType::kHALF)};
    DynamicPluginTensorDesc cout[1] = {desc({2, 576}, DataType::kFLOAT)};
    CHECK(p->configurePlugin(cin, 2, cout, 1) == 0);
    // the fp16 d = 64 variant has BLOCK_M 64: M = ceil(577 / 64) = 10; partials [B, L * H * M, P]
    CHECK(p->getWorkspaceSize(cin, 2, cout, 1) == static_cast<size_t>(align256(2 * 3 * 16 * 10 * 576 * 4)));
    DynamicPluginTensorDesc wrongL[2] = {desc({4, 2, 16, 577, 64}, DataType::kHALF), desc({4, 2, 16, 577, 64}, DataType::kHALF)};
    CHECK(p->configurePlugin(wrongL, 2, cout, 1) == -1);
    CHECK(gFinder.logger.take().find("score_layers lists 3") != std::string::npos);
    DynamicPluginTensorDesc wrongD[2] = {desc({3, 2, 16, 577, 80}, DataType::kHALF), desc({3, 2, 16, 577, 80}, DataType::kHALF)};
    CHECK(p->configurePlugin(wrongD, 2, cout, 1) == -1);
    CHECK(gFinder.logger.take().find("head dim d = 80") != std::string::npos);
    PluginTensorDesc rin[2] = {cin[0].desc, cin[1].desc};
    PluginTensorDesc rout[1] = {cout[0].desc};
    CHECK(p->onShapeChange(rin, 2, rout, 1) == 0);
}

void testSelectBuildInterface()
{
    gCurrentTest = "Select build interface";
    useDevice(0, 8, 6);
    Creators c;
    auto paper = create<SelectPlugin>(c.select, Fields());
    auto budget = create<SelectPlugin>(c.select, Fields().add<int32_t>("budget", PluginFieldType::kINT32, {64}));
    CHECK(paper != nullptr && budget != nullptr);
    if (!paper || !budget)
        return;
    CHECK(paper->getNbOutputs() == 3);
    DataType outTypes[3]{};
    DataType const ins[2] = {DataType::kFLOAT, DataType::kBF16};
    CHECK(paper->getOutputDataTypes(outTypes, 3, ins, 2) == 0);
    CHECK(outTypes[0] == DataType::kBF16 && outTypes[1] == DataType::kINT32 && outTypes[2] == DataType::kINT32);
    DataType const halfScores[2] = {DataType::kHALF, DataType::kHALF};
    CHECK(paper->getOutputDataTypes(outTypes, 3, halfScores, 2) == -1);
    CHECK(gFinder.logger.take().find("scores must be fp32") != std::string::npos);

    auto formats = [&](DataType scores, DataType feats, DataType sel, DataType counts, DataType idx) {
        DynamicPluginTensorDesc io[5] = {desc({2, 576}, scores), desc({2, 576, 1024}, feats),
            desc({2, 288, 1024}, sel), desc({2}, counts), desc({2, 288}, idx)};
        bool ok = true;
        for (int32_t pos = 0; pos < 5; ++pos)
            ok = ok && paper->supportsFormatCombination(pos, io, 2, 3);
        return ok;
    };
    for (DataType t : {DataType::kHALF, DataType::kBF16, DataType::kFLOAT}) // gather copies bits: b16 and b32
        CHECK(formats(DataType::kFLOAT, t, t, DataType::kINT32, DataType::kINT32));
    CHECK(!formats(DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kINT32, DataType::kINT32));
    CHECK(!formats(DataType::kFLOAT, DataType::kHALF, DataType::kFLOAT, DataType::kINT32, DataType::kINT32));
    CHECK(!formats(DataType::kFLOAT, DataType::kHALF, DataType::kHALF, DataType::kINT64, DataType::kINT32));
    CHECK(!formats(DataType::kFLOAT, DataType::kINT8, DataType::kINT8, DataType::kINT32, DataType::kINT32));

    FakeBuilder b;
    DimsExprs in[2] = {b.dims({2, 576}), b.dims({2, 576, 1024})};
    DimsExprs out[3];
    CHECK(paper->getOutputShapes(in, 2, nullptr, 0, out, 3, b) == 0);
    CHECK((values(out[0]) == std::vector<int64_t>{2, 288, 1024}));
    CHECK((values(out[1]) == std::vector<int64_t>{2}));
    CHECK((values(out[2]) == std::vector<int64_t>{2, 288}));
    CHECK(budget->getOutputShapes(in, 2, nullptr, 0, out, 3, b) == 0);
    CHECK((values(out[0]) == std::vector<int64_t>{2, 64, 1024}));
    CHECK((values(out[2]) == std::vector<int64_t>{2, 64}));
    DimsExprs dynamicP[2] = {b.dims({2, 576}, false), b.dims({2, 576, 1024}, false)};
    CHECK(paper->getOutputShapes(dynamicP, 2, nullptr, 0, out, 3, b) == -1);
    CHECK(gFinder.logger.take().find("grid_h / grid_w") != std::string::npos);
    DimsExprs odd[2] = {b.dims({2, 577}), b.dims({2, 577, 1024})};
    CHECK(paper->getOutputShapes(odd, 2, nullptr, 0, out, 3, b) == -1);
    CHECK(gFinder.logger.take().find("not a square grid") != std::string::npos);

    // explicit grid: Kmax known even with a dynamic P
    auto gridded = create<SelectPlugin>(c.select,
        Fields().add<int32_t>("grid_h", PluginFieldType::kINT32, {16}).add<int32_t>("grid_w", PluginFieldType::kINT32, {36}));
    CHECK(gridded != nullptr);
    if (gridded)
    {
        CHECK(gridded->getOutputShapes(dynamicP, 2, nullptr, 0, out, 3, b) == 0);
        CHECK(values(out[2])[1] == gridded->kmaxFor(-1));
        CHECK(gridded->kmaxFor(-1) == selectKmax(16, 36, SelectParams{}));
    }

    DynamicPluginTensorDesc cin[2] = {desc({2, 576}, DataType::kFLOAT), desc({2, 576, 1024}, DataType::kHALF)};
    DynamicPluginTensorDesc cout[3] = {desc({2, 288, 1024}, DataType::kHALF), desc({2}, DataType::kINT32),
        desc({2, 288}, DataType::kINT32)};
    CHECK(paper->configurePlugin(cin, 2, cout, 3) == 0);
    CHECK(paper->config().gridH == 24 && paper->config().gridW == 24);
    // select_p1024 writes int64 indices/counts/stages: all three live in the workspace
    size_t const expected = static_cast<size_t>(align256(2 * 288 * 8) + align256(2 * 8) + align256(2 * 288 * 8));
    CHECK(paper->getWorkspaceSize(cin, 2, cout, 3) == expected);
    DynamicPluginTensorDesc mismatched[2] = {desc({2, 576}, DataType::kFLOAT), desc({2, 577, 1024}, DataType::kHALF)};
    CHECK(paper->configurePlugin(mismatched, 2, cout, 3) == -1);
    CHECK(gFinder.logger.take().find("disagree") != std::string::npos);
    DynamicPluginTensorDesc tooBig[2] = {desc({2, 2304}, DataType::kFLOAT), desc({2, 2304, 1024}, DataType::kHALF)};
    auto big = create<SelectPlugin>(c.select, Fields());
    CHECK(big != nullptr && big->configurePlugin(tooBig, 2, cout, 3) == -1); // no select variant with BLOCK_P >= 2304
    CHECK(gFinder.logger.take().find("P = 2304") != std::string::npos);
    DynamicPluginTensorDesc ranged[2] = {desc({2, 576}, DataType::kFLOAT), desc({2, 576, 1024}, DataType::kHALF)};
    ranged[0].min.d[1] = ranged[1].min.d[1] = 1;
    CHECK(big->configurePlugin(ranged, 2, cout, 3) == -1);
    CHECK(gFinder.logger.take().find("build-time constant") != std::string::npos);
    CHECK(paper->getCapabilityInterface(PluginCapabilityType::kRUNTIME) != nullptr);
}

int printFields()
{
    useDevice(0, 8, 6);
    Creators c;
    std::printf("{\n");
    IPluginCreatorV3One* creators[2] = {&c.score, &c.select};
    for (int32_t k = 0; k < 2; ++k)
    {
        IPluginCreatorV3One* creator = creators[k];
        PluginFieldCollection const* declared = creator->getFieldNames();
        std::printf("  \"%s\": {\"namespace\": \"%s\", \"version\": \"%s\", \"fields\": [", creator->getPluginName(),
            creator->getPluginNamespace(), creator->getPluginVersion());
        for (int32_t i = 0; i < declared->nbFields; ++i)
        {
            PluginField const& f = declared->fields[i];
            std::printf("%s{\"name\": \"%s\", \"type\": \"%s\", \"length\": %d}", i ? ", " : "", f.name,
                typeName(f.type), f.length);
        }
        // defaults: what a plugin created from no fields serializes
        PluginFieldCollection const empty{0, nullptr};
        std::unique_ptr<IPluginV3> plugin(creator->createPlugin("defaults", &empty, TensorRTPhase::kBUILD));
        if (!plugin)
            return 1;
        auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
        auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
        std::printf("], \"nb_outputs\": %d, \"defaults\": {", build->getNbOutputs());
        for (int32_t i = 0; i < serialized->nbFields; ++i)
        {
            PluginField const& f = serialized->fields[i];
            std::printf("%s\"%s\": %s", i ? ", " : "", f.name, fieldValueJson(f).c_str());
        }
        std::printf("}}%s\n", k == 0 ? "," : "");
    }
    std::printf("}\n");
    return 0;
}

// Fake device addresses (never dereferenced): 256-byte aligned like TensorRT's buffers.
template <typename T = void>
T* fakePtr(uintptr_t address)
{
    return reinterpret_cast<T*>(address);
}

void testScoreEnqueue()
{
    gCurrentTest = "Score enqueue";
    useDevice(0, 8, 6);
    Creators c;
    auto built = create<ScorePlugin>(c.score, Fields());
    CHECK(built != nullptr);
    if (!built)
        return;
    std::unique_ptr<IPluginV3> attached(built->attachToContext(nullptr));
    auto* runtime = static_cast<ScorePlugin*>(attached.get());
    PluginTensorDesc in[2] = {desc({3, 2, 16, 577, 64}, DataType::kHALF).desc, desc({3, 2, 16, 577, 64}, DataType::kHALF).desc};
    PluginTensorDesc out[1] = {desc({2, 576}, DataType::kFLOAT).desc};
    CHECK(runtime->onShapeChange(in, 2, out, 1) == 0);
    void const* inputs[2] = {fakePtr(0x10000), fakePtr(0x20000)};
    void* outputs[1] = {fakePtr(0x30000)};
    gLaunches.clear();
    CHECK(runtime->enqueue(in, out, inputs, outputs, fakePtr(0x40000), nullptr) == 0);
    CHECK(gLaunches.size() == 2);
    if (gLaunches.size() != 2)
        return;
    KernelTable const table = builtinKernelTable();
    LaunchRecord const& main = gLaunches[0];
    KernelEntry const& me = *selectEntry(table, main.variant, 8, 6);
    CHECK(main.variant == "score_fp16_d64");
    CHECK(main.grid.x == 10 && main.grid.y == 3 * 16 && main.grid.z == 2);
    CHECK(main.block.x == 128 && main.shared == 16384);
    CHECK(main.param<void*>("q_ptr", me) == inputs[0] && main.param<void*>("k_ptr", me) == inputs[1]);
    CHECK(main.param<void*>("partial_ptr", me) == fakePtr(0x40000));
    CHECK(main.param<int32_t>("L", me) == 3 && main.param<int32_t>("H", me) == 16 && main.param<int32_t>("N", me) == 577);
    CHECK(main.param<float>("scale", me) == 0.125f);
    CHECK(main.param<int32_t>("stride_ql", me) == 2 * 16 * 577 * 64 && main.param<int32_t>("stride_kn", me) == 64);
    CHECK(main.params.size() == 17 && main.params[15] == (std::array<unsigned char, 8>{}));
    LaunchRecord const& reduce = gLaunches[1];
    KernelEntry const& re = *selectEntry(table, reduce.variant, 8, 6);
    CHECK(reduce.variant == "score_reduce");
    CHECK(reduce.grid.x == 18 && reduce.grid.y == 2 && reduce.grid.z == 1 && reduce.block.x == 128);
    CHECK(reduce.param<void*>("partial_ptr", re) == fakePtr(0x40000) && reduce.param<void*>("out_ptr", re) == outputs[0]);
    CHECK(reduce.param<int32_t>("R", re) == 3 * 16 * 10 && reduce.param<int32_t>("N", re) == 577);
    CHECK(reduce.param<float>("count", re) == 3.0f * 16 * 577);

    gLaunchStatus = cudaErrorLaunchFailure; // a failed launch: -1 and a logged CUDA error
    CHECK(runtime->enqueue(in, out, inputs, outputs, fakePtr(0x40000), nullptr) == -1);
    CHECK(gFinder.logger.take().find("cudaErrorLaunchFailure") != std::string::npos);
    gLaunchStatus = cudaSuccess;
    void const* misaligned[2] = {fakePtr(0x10008), fakePtr(0x20000)};
    CHECK(runtime->enqueue(in, out, misaligned, outputs, fakePtr(0x40000), nullptr) == -1);
    CHECK(gFinder.logger.take().find("16-byte aligned") != std::string::npos);
}

void checkSelectLaunches(int64_t kmax, int32_t isBudget)
{
    KernelTable const table = builtinKernelTable();
    CHECK(gLaunches.size() == 2 && gCopies.size() == 2);
    if (gLaunches.size() != 2 || gCopies.size() != 2 || gUploads.empty())
        return;
    int32_t const* geometry = gUploads.back().data();
    SelectParams params;
    params.budget = isBudget ? static_cast<int32_t>(kmax) : 0;
    Geometry const g = selectionGeometry(24, 24, params);
    PackedGeometry const packed = packGeometry(g, windowStarts(g));
    CHECK(gUploads.back() == packed.values);
    int64_t const countsOffset = align256(2 * kmax * 8);
    LaunchRecord const& sel = gLaunches[0];
    KernelEntry const& se = *selectEntry(table, sel.variant, 8, 6);
    CHECK(sel.variant == "select_p1024" && sel.grid.x == 2 && sel.grid.y == 1 && sel.block.x == 128);
    CHECK(sel.param<void*>("scores_ptr", se) == fakePtr(0x10000));
    CHECK(sel.param<int32_t const*>("region_of_ptr", se) == geometry + packed.offsets[0]);
    CHECK(sel.param<int32_t const*>("region_start_ptr", se) == geometry + packed.offsets[1]);
    CHECK(sel.param<int32_t const*>("region_quota_ptr", se) == geometry + packed.offsets[2]);
    CHECK(sel.param<int32_t const*>("window_of_ptr", se) == geometry + packed.offsets[3]);
    CHECK(sel.param<int32_t const*>("window_start_ptr", se) == geometry + packed.offsets[4]);
    CHECK(sel.param<char*>("indices_ptr", se) == fakePtr<char>(0x90000));
    CHECK(sel.param<char*>("counts_ptr", se) == fakePtr<char>(0x90000) + countsOffset);
    CHECK(sel.param<char*>("stages_ptr", se) == fakePtr<char>(0x90000) + countsOffset + 256);
    CHECK(sel.param<int32_t>("P", se) == 576 && sel.param<int32_t>("KMAX", se) == kmax);
    CHECK(sel.param<int32_t>("IS_BUDGET", se) == isBudget && sel.param<int32_t>("stride_sb", se) == 576);
    LaunchRecord const& gat = gLaunches[1];
    KernelEntry const& ge = *selectEntry(table, gat.variant, 8, 6);
    CHECK(gat.variant == "gather_b16");
    CHECK(gat.grid.x == ceilDiv(kmax, 32) && gat.grid.y == 8 && gat.grid.z == 2);
    CHECK(gat.param<void*>("features_ptr", ge) == fakePtr(0x20000));
    CHECK(gat.param<char*>("indices_ptr", ge) == fakePtr<char>(0x90000));
    CHECK(gat.param<void*>("gathered_ptr", ge) == fakePtr(0x50000));
    CHECK(gat.param<int32_t>("D", ge) == 1024 && gat.param<int32_t>("KMAX", ge) == kmax);
    CHECK(gat.param<int32_t>("stride_fb", ge) == 576 * 1024 && gat.param<int32_t>("stride_fp", ge) == 1024);
    // int64 -> int32: the low 4 bytes of every 8-byte element, for indices then counts
    CopyRecord const& idx = gCopies[0];
    CHECK(idx.dst == fakePtr(0x70000) && idx.src == fakePtr(0x90000));
    CHECK(idx.dpitch == 4 && idx.spitch == 8 && idx.width == 4 && idx.height == static_cast<size_t>(2 * kmax));
    CopyRecord const& cnt = gCopies[1];
    CHECK(cnt.dst == fakePtr(0x60000) && cnt.src == fakePtr<char>(0x90000) + countsOffset);
    CHECK(cnt.dpitch == 4 && cnt.spitch == 8 && cnt.width == 4 && cnt.height == 2);
}

void testSelectEnqueue()
{
    gCurrentTest = "Select enqueue";
    useDevice(0, 8, 6);
    gUploads.reserve(64);
    Creators c;
    for (int32_t budget : {0, 64})
    {
        gCurrentTest = std::string("Select enqueue budget=") + std::to_string(budget);
        Fields f;
        f.add<int32_t>("budget", PluginFieldType::kINT32, {budget})
            .add<int32_t>("grid_h", PluginFieldType::kINT32, {24})
            .add<int32_t>("grid_w", PluginFieldType::kINT32, {24});
        auto built = create<SelectPlugin>(c.select, f);
        CHECK(built != nullptr);
        if (!built)
            return;
        size_t const uploads = gUploads.size();
        std::unique_ptr<IPluginV3> attached(built->attachToContext(nullptr)); // uploads the geometry here
        CHECK(attached != nullptr && gUploads.size() == uploads + 1);
        auto* runtime = static_cast<SelectPlugin*>(attached.get());
        int64_t const kmax = runtime->kmaxFor(576);
        PluginTensorDesc in[2] = {desc({2, 576}, DataType::kFLOAT).desc, desc({2, 576, 1024}, DataType::kHALF).desc};
        PluginTensorDesc out[3] = {desc({2, kmax, 1024}, DataType::kHALF).desc, desc({2}, DataType::kINT32).desc,
            desc({2, kmax}, DataType::kINT32).desc};
        CHECK(runtime->onShapeChange(in, 2, out, 3) == 0);
        CHECK(gUploads.size() == uploads + 1); // onShapeChange reuses it
        void const* inputs[2] = {fakePtr(0x10000), fakePtr(0x20000)};
        void* outputs[3] = {fakePtr(0x50000), fakePtr(0x60000), fakePtr(0x70000)};
        gLaunches.clear();
        gCopies.clear();
        CHECK(runtime->enqueue(in, out, inputs, outputs, fakePtr(0x90000), nullptr) == 0);
        checkSelectLaunches(kmax, budget > 0 ? 1 : 0);
    }
    gCurrentTest = "Select enqueue without geometry";
    auto bare = create<SelectPlugin>(c.select, Fields());
    PluginTensorDesc in[2] = {desc({2, 576}, DataType::kFLOAT).desc, desc({2, 576, 1024}, DataType::kHALF).desc};
    PluginTensorDesc out[3] = {desc({2, 288, 1024}, DataType::kHALF).desc, desc({2}, DataType::kINT32).desc,
        desc({2, 288}, DataType::kINT32).desc};
    void const* inputs[2] = {fakePtr(0x10000), fakePtr(0x20000)};
    void* outputs[3] = {fakePtr(0x50000), fakePtr(0x60000), fakePtr(0x70000)};
    CHECK(bare != nullptr && bare->enqueue(in, out, inputs, outputs, fakePtr(0x90000), nullptr) == -1);
    CHECK(gFinder.logger.take().find("not configured") != std::string::npos);
}

std::vector<std::pair<char const*, std::function<void()>>> pluginTests()
{
    return {
        {"creators", testCreators},
        {"create valid", testCreateValid},
        {"create invalid", testCreateInvalid},
        {"no cubin", testNoCubinForDevice},
        {"serialization", testSerializationRoundTrip},
        {"score build", testScoreBuildInterface},
        {"select build", testSelectBuildInterface},
        {"score enqueue", testScoreEnqueue},
        {"select enqueue", testSelectEnqueue},
    };
}
} // namespace hivtp_test

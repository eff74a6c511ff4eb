// Flow Matching samplers against hand-computed results on a network with a known velocity:
// Euler and Heun step counts, classifier-free guidance at sampling, and the NFE checks.
#include <gtest/gtest.h>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/methods/flow_matching.h"

using namespace onestep;

namespace {

// v(z, t, c) = a(c) * z + t with a = 1 for the null label and 3 otherwise; counts its calls.
class LinearVelocity : public NetworkImpl {
 public:
  LinearVelocity() : NetworkImpl({{1}, {1}, 2}) {}
  torch::Tensor forward(const NetInput& in) override {
    ++calls;
    const auto a = in.c.defined() ? torch::where(in.c.eq(null_label()), 1.0, 3.0).to(in.z.dtype()) : torch::ones_like(in.t);
    return a.unsqueeze(1) * in.z + in.t.unsqueeze(1);
  }
  std::vector<torch::Tensor> output_parameters() override { return {}; }
  int calls = 0;
};

FlowMatching make_fm(const std::string& sampler, double cfg_scale) {
  Config config;
  config.apply_override("method.name=fm");
  config.apply_override("method.sampler=" + sampler);
  config.apply_override("method.cfg_scale=" + std::to_string(cfg_scale));
  return FlowMatching(FlowMatchingOptions::schema().read(config));
}

// The test network as a method's module set, and a reference to it.
struct Modules {
  std::shared_ptr<LinearVelocity> net = std::make_shared<LinearVelocity>();
  ModuleSet set;
  Modules() { set.add("net", net); }
};

}  // namespace

TEST(FlowMatching, EulerFollowsTheGridWithOneEvaluationPerStep) {
  Modules m;
  auto fm = make_fm("euler", 1.0);
  const auto z1 = torch::tensor({{2.0}});
  // Two steps of 0.5 with v = z + t: z(0.5) = 2 - 0.5 (2 + 1) = 0.5; z(0) = 0.5 - 0.5 (0.5 + 0.5) = 0.
  const auto out = fm.sample(m.set, z1, torch::Tensor(), {2});
  EXPECT_NEAR(out.item<double>(), 0.0, 1e-12);
  EXPECT_EQ(m.net->calls, 2);
  EXPECT_EQ(fm.count_nfe({2}).backbone, 2);
  EXPECT_EQ(fm.count_nfe({2}).head, 0);
}

TEST(FlowMatching, HeunAveragesTwoSlopesAndEndsWithEuler) {
  Modules m;
  auto fm = make_fm("heun", 1.0);
  const auto z1 = torch::tensor({{2.0}});
  // NFE 3 = 2 steps. Step 1: v(2, 1) = 3, Euler guess 0.5, v(0.5, 0.5) = 1, Heun z = 2 - 0.25 (3 + 1) = 1.
  // Step 2 (last, Euler): z = 1 - 0.5 (1 + 0.5) = 0.25.
  EXPECT_NEAR(fm.sample(m.set, z1, torch::Tensor(), {3}).item<double>(), 0.25, 1e-12);
  EXPECT_EQ(m.net->calls, 3);
  EXPECT_THROW(fm.sample(m.set, z1, torch::Tensor(), {4}), UserError);
}

TEST(FlowMatching, GuidanceMixesConditionalAndUnconditionalVelocities) {
  Modules m;
  auto fm = make_fm("euler", 2.0);
  const auto z1 = torch::tensor({{1.0}});
  // v = v_null + 2 (v_c - v_null) = (z + 1) + 2 ((3z + 1) - (z + 1)) = 5z + 1 = 6 at z = 1, t = 1.
  const auto out = fm.sample(m.set, z1, torch::tensor({int64_t{0}}), {1});
  EXPECT_NEAR(out.item<double>(), 1.0 - 6.0, 1e-12);
  EXPECT_EQ(m.net->calls, 1);  // conditional and unconditional in one batch
}

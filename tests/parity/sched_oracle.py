#!/usr/bin/env python3
"""Oracle for the model/sched parity test: diffusers' own schedulers (DDPM, EulerDiscrete,
EulerAncestralDiscrete, DDIM, DPMSolverMultistep, LCM) and the official LCM-Lookahead one-step
preview formula write the reference values (schedule tables, add_noise/velocity, previews,
timestep/sigma schedules, full sampling chains with every noise draw recorded and the generator's
next draw after them) that tests/model/sched_parity_test.cpp replays. Fixed SDXL and sdxl-turbo
cases plus cases drawn from SEED.

  sched_oracle.py OUTDIR SEED      writes OUTDIR/sched_fixture.json; SEED = integer or "random"
                                   ("random" takes $LA_PARITY_SEED when set, else a fresh seed)
"""
import json
import os
import random
import sys

import torch

import diffusers
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler)
from diffusers.schedulers import (scheduling_ddim, scheduling_dpmsolver_multistep, scheduling_euler_ancestral_discrete,
                                  scheduling_euler_discrete, scheduling_lcm)

# SDXL base scheduler/scheduler_config.json.
SDXL = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
        "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}

# sdxl-turbo scheduler/scheduler_config.json (written by diffusers 0.24.0.dev0).
SDXL_TURBO = {"_class_name": "EulerAncestralDiscreteScheduler", "_diffusers_version": "0.24.0.dev0",
              "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
              "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
              "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
              "timestep_spacing": "trailing", "trained_betas": None}

CLASSES = {"euler": EulerDiscreteScheduler, "euler_ancestral": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler,
           "dpm_solver": DPMSolverMultistepScheduler, "lcm": LCMScheduler}
MODULES = {"euler": scheduling_euler_discrete, "euler_ancestral": scheduling_euler_ancestral_discrete,
           "ddim": scheduling_ddim, "dpm_solver": scheduling_dpmsolver_multistep, "lcm": scheduling_lcm}
SIGMA_KINDS = ("euler", "euler_ancestral", "dpm_solver")  # samplers with a sigmas table
SCALED_KINDS = ("euler", "euler_ancestral")                # samplers whose scale_model_input is not the identity


def flat(t):
    return t.detach().to(torch.float64).flatten().tolist()


class NoiseRecorder:
    """Wraps a scheduler module's randn_tensor so every noise tensor a step draws is recorded."""

    def __init__(self, module):
        self.module, self.original, self.drawn = module, module.randn_tensor, []

    def __enter__(self):
        def recording(*args, **kwargs):
            out = self.original(*args, **kwargs)
            self.drawn.append(out.clone())
            return out
        self.module.randn_tensor = recording
        return self

    def __exit__(self, *exc):
        self.module.randn_tensor = self.original

    def take(self):
        drawn, self.drawn = self.drawn, []
        assert len(drawn) <= 1, "a step drew more than one noise tensor"
        return drawn[0] if drawn else None


def schedule_valid(ts, n, T):
    """False where diffusers builds a timestep outside [0, T), a repeat, or a length other than n:
    the C++ samplers must refuse those schedules."""
    ts = [float(t) for t in ts]
    return (len(ts) == n and all(0 <= t <= T - 1 for t in ts)
            and all(b < a for a, b in zip(ts, ts[1:])))


def make_scheduler(kind, config, n):
    """The scheduler after set_timesteps(n), and whether the schedule is one we accept."""
    sched = CLASSES[kind].from_config(config)
    try:
        sched.set_timesteps(n)
    except (ValueError, IndexError):
        return sched, False
    return sched, schedule_valid(sched.timesteps.tolist(), n, sched.config.num_train_timesteps)


def timesteps_case(name, kind, config, n):
    sched, valid = make_scheduler(kind, config, n)
    case = {"name": name, "sampler": kind, "config": config, "n": n, "valid": valid}
    if valid:
        case["timesteps"] = flat(sched.timesteps)
        case["sigmas"] = flat(sched.sigmas) if kind in SIGMA_KINDS else None
        case["init_noise_sigma"] = float(sched.init_noise_sigma)
    return case


def chain_case(name, kind, config, n, options, shape, data_seed, generator_seed, dtype=torch.float32):
    """A sampling chain; `dtype` is the sample's and model output's (diffusers computes some steps in
    float32 and casts back)."""
    sched, valid = make_scheduler(kind, config, n)
    assert valid, f"{name}: invalid schedule for n={n}"
    data = torch.Generator().manual_seed(data_seed)
    x = (torch.randn(shape, generator=data) * sched.init_noise_sigma).to(dtype)
    case = {"name": name, "sampler": kind, "config": config, "options": options, "n": n, "shape": list(shape),
            "dtype": str(dtype).replace("torch.", ""), "generator_seed": generator_seed,
            "timesteps": flat(sched.timesteps),
            "init_noise_sigma": float(sched.init_noise_sigma), "sample0": flat(x), "steps": []}
    gen = torch.Generator().manual_seed(generator_seed)
    step_kwargs = dict(options)
    if kind == "euler" and "s_tmax" not in step_kwargs:
        step_kwargs["s_tmax"] = float("inf")
    with NoiseRecorder(MODULES[kind]) as recorder:
        for t in sched.timesteps:
            scaled = sched.scale_model_input(x, t)
            model_output = torch.randn(shape, generator=data).to(dtype)
            out = sched.step(model_output, t, x, generator=gen, **step_kwargs)
            if kind == "lcm":
                pred = out.denoised
            elif kind == "dpm_solver":
                pred = sched.model_outputs[-1]
            else:
                pred = out.pred_original_sample
            noise = recorder.take()
            case["steps"].append({"model_output": flat(model_output),
                                  "scaled_input": flat(scaled) if kind in SCALED_KINDS else None,
                                  "noise": flat(noise) if noise is not None else None,
                                  "prev_sample": flat(out.prev_sample), "pred_x0": flat(pred)})
            x = out.prev_sample
    # What the generator draws next: equal only if the chain consumed it exactly as diffusers does.
    case["next_randn"] = flat(torch.randn(16, generator=gen))
    return case


def random_schedule(rng):
    schedule = rng.choice([("scaled_linear", 0.00085, 0.012), ("linear", 0.0001, 0.02), ("linear", 0.00085, 0.012),
                           ("squaredcos_cap_v2", 0.0001, 0.02)])
    return {"beta_schedule": schedule[0], "beta_start": schedule[1], "beta_end": schedule[2],
            "num_train_timesteps": rng.choice([1000, 1000, 500]),
            "prediction_type": rng.choice(["epsilon", "epsilon", "v_prediction", "sample"])}


def random_chain(rng, kind, index, seed):
    """A random config of one sampler with a step count that gives a valid schedule."""
    config = random_schedule(rng)
    if kind == "euler_ancestral" and config["prediction_type"] == "sample":
        config["prediction_type"] = "epsilon"  # diffusers' EulerAncestral step raises NotImplementedError
    options = {}
    if kind != "lcm":
        config.update(timestep_spacing=rng.choice(["leading", "trailing", "linspace"]),
                      steps_offset=rng.choice([0, 1]))
    if kind == "euler":
        config["final_sigmas_type"] = rng.choice(["zero", "sigma_min"])
        if rng.random() < 0.5:
            options = {"s_churn": rng.uniform(0.1, 3.0), "s_tmin": rng.choice([0.0, 0.5]), "s_noise": rng.choice([1.0, 0.9])}
            if rng.random() < 0.5:
                options["s_tmax"] = rng.choice([2.0, 5.0])
    elif kind == "ddim":
        config.update(clip_sample=rng.choice([True, False]), clip_sample_range=rng.choice([1.0, 2.5]),
                      set_alpha_to_one=rng.choice([True, False]))
        options = {"eta": rng.choice([0.0, rng.uniform(0.1, 1.0)])}
    elif kind == "dpm_solver":
        config.update(solver_order=rng.choice([1, 2, 3]), algorithm_type=rng.choice(["dpmsolver++", "sde-dpmsolver++"]),
                      solver_type=rng.choice(["midpoint", "heun"]), lower_order_final=rng.choice([True, False]),
                      euler_at_final=rng.choice([True, False]), final_sigmas_type=rng.choice(["zero", "sigma_min"]))
    elif kind == "lcm":
        T = config["num_train_timesteps"]
        config.update(original_inference_steps=rng.choice([50, rng.randint(10, 100)]),
                      timestep_scaling=rng.choice([10.0, rng.uniform(1.0, 20.0)]),
                      clip_sample=rng.choice([True, False]), set_alpha_to_one=rng.choice([True, False]))
        config["original_inference_steps"] = min(config["original_inference_steps"], T)
    for _ in range(100):
        n = rng.randint(1, 25)
        if make_scheduler(kind, config, n)[1]:
            break
    shape = (rng.choice([1, 2]), 4, rng.randint(2, 5), rng.randint(2, 5))
    return chain_case(f"random{index} {kind} {json.dumps(config, sort_keys=True)} {options}", kind, config, n,
                      options, shape, data_seed=seed * 1000 + index, generator_seed=seed + index)


def preview_case(name, t, shape, gen):
    sched = LCMScheduler.from_config(SDXL)
    z, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    t = torch.tensor(t, dtype=torch.long)
    # The official LCMSingleStepScheduler.step (epsilon): current t, per-sample coefficients.
    alpha = sched.alphas_cumprod[t]
    beta = 1 - alpha
    c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(t)
    x0 = (z - beta.sqrt()[..., None, None, None] * eps) / alpha.sqrt()[..., None, None, None]
    denoised = c_out[..., None, None, None] * x0 + c_skip[..., None, None, None] * z
    return {"name": name, "class": "lcm", "config": SDXL, "shape": list(shape), "z_t": flat(z),
            "model_output": flat(eps), "timesteps": t.tolist(), "c_skip": flat(c_skip), "c_out": flat(c_out),
            "denoised": flat(denoised)}


def add_noise_case(name, config, dtype, t, shape, gen):
    sched = DDPMScheduler.from_config(config)
    x0 = torch.randn(shape, generator=gen).to(dtype)
    noise = torch.randn(shape, generator=gen).to(dtype)
    t = torch.tensor(t, dtype=torch.long)
    return {"name": name, "class": "ddpm", "config": config, "dtype": str(dtype).replace("torch.", ""),
            "shape": list(shape), "x0": flat(x0), "noise": flat(noise), "timesteps": t.tolist(),
            "noisy": flat(sched.add_noise(x0, noise, t)), "velocity": flat(sched.get_velocity(x0, noise, t))}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    outdir, seed_arg = sys.argv[1], sys.argv[2]
    if seed_arg == "random":
        seed_arg = os.environ.get("LA_PARITY_SEED") or str(random.SystemRandom().randrange(2**31))
    seed = int(seed_arg)
    print(f"sched_oracle: seed {seed} (reproduce: {sys.argv[0]} {outdir} {seed}, or LA_PARITY_SEED={seed} ctest)")
    diffusers.utils.logging.set_verbosity_error()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    fixture = {"seed": seed, "diffusers_version": diffusers.__version__}

    schedule_configs = [("sdxl", "ddpm", SDXL), ("ddpm defaults", "ddpm", {}), ("lcm defaults", "lcm", {}),
                        ("cosine", "ddpm", {"beta_schedule": "squaredcos_cap_v2"}),
                        ("random", "ddpm", random_schedule(rng))]
    fixture["schedules"] = []
    for name, cls, config in schedule_configs:
        sched = (LCMScheduler if cls == "lcm" else DDPMScheduler).from_config(config)
        fixture["schedules"].append({"name": name, "class": cls, "config": config, "betas": flat(sched.betas),
                                     "alphas_cumprod": flat(sched.alphas_cumprod)})

    T = 1000
    fixture["add_noise"] = [
        add_noise_case("sdxl fp32", SDXL, torch.float32, [0, 999, 259, rng.randrange(T)], (4, 4, 3, 3), gen),
        add_noise_case("sdxl fp16", SDXL, torch.float16, [rng.randrange(T) for _ in range(3)], (3, 4, 2, 2), gen),
        add_noise_case("random fp32", dict(random_schedule(rng), num_train_timesteps=T), torch.float32,
                       [rng.randrange(T) for _ in range(5)], (5, 2, 3), gen),
    ]
    fixture["lcm_preview"] = [
        preview_case("t=999,0,259,499", [999, 0, 259, 499], (4, 4, 3, 3), gen),
        preview_case("random t", [rng.randrange(T) for _ in range(6)], (6, 4, 2, 2), gen),
    ]

    cases = []
    for kind in ("euler", "ddim", "dpm_solver", "euler_ancestral"):
        for spacing in ("leading", "trailing", "linspace"):
            for offset in (0, 1):
                config = dict(SDXL, timestep_spacing=spacing, steps_offset=offset)
                ns = list(range(1, 41)) + [rng.randint(41, 1000) for _ in range(4)] + [61, 999, 1000]
                cases += [timesteps_case(f"{kind} {spacing} offset {offset}", kind, config, n) for n in ns]
    for original in (50, rng.randint(10, 200)):
        config = dict(SDXL, original_inference_steps=original)
        cases += [timesteps_case(f"lcm original {original}", "lcm", config, n)
                  for n in list(range(1, 56)) + [original, original + 1]]
    fixture["timesteps"] = cases

    shape = (2, 4, 4, 4)
    chains = []
    for n in (1, 4, 30):
        chains.append(chain_case(f"sdxl euler n={n}", "euler", SDXL, n, {}, shape, 10 + n, 100 + n))
        chains.append(chain_case(f"sdxl ddim n={n}", "ddim", SDXL, n, {}, shape, 20 + n, 200 + n))
    chains.append(chain_case("sdxl ddim eta=0.5 n=10", "ddim", SDXL, 10, {"eta": 0.5}, shape, 31, 301))
    for n in (1, 2, 4, 30):
        chains.append(chain_case(f"sdxl dpm++2m n={n}", "dpm_solver", SDXL, n, {}, shape, 40 + n, 400 + n))
    for n in (1, 2, 4, 8):
        chains.append(chain_case(f"sdxl lcm n={n}", "lcm", SDXL, n, {}, shape, 50 + n, 500 + n))
    for n in (1, 2, 4):
        chains.append(chain_case(f"sdxl-turbo euler_ancestral n={n}", "euler_ancestral", SDXL_TURBO, n, {}, shape,
                                 60 + n, 600 + n))
    for spacing in ("leading", "linspace"):
        chains.append(chain_case(f"sdxl-turbo euler_ancestral {spacing} n=4", "euler_ancestral",
                                 dict(SDXL_TURBO, timestep_spacing=spacing), 4, {}, shape, 70, 700))
    chains.append(chain_case("sdxl-turbo euler_ancestral v_prediction n=4", "euler_ancestral",
                             dict(SDXL_TURBO, prediction_type="v_prediction"), 4, {}, shape, 71, 701))
    chains.append(chain_case("sdxl-turbo euler_ancestral fp16 n=2", "euler_ancestral", SDXL_TURBO, 2, {}, shape,
                             72, 702, dtype=torch.float16))
    index = 0
    for kind in ("euler", "ddim", "dpm_solver", "lcm", "euler_ancestral"):
        for _ in range(4):
            chains.append(random_chain(rng, kind, index, seed))
            index += 1
    fixture["chains"] = chains

    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "sched_fixture.json")
    with open(path, "w") as f:
        json.dump(fixture, f, allow_nan=False)
    print(f"sched_oracle: wrote {path} ({len(cases)} schedules, {len(chains)} chains, "
          f"{sum(len(c['steps']) for c in chains)} steps)")


if __name__ == "__main__":
    main()

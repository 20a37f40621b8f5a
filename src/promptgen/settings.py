"""Generation settings: the inputs of stable-diffusion-img2img that people can change.

Defaults and limits follow the model's published input schema. The limit on inference
steps is lower than the model's own (500) to keep a run's cost predictable.
"""

import re

#: Schedulers the model accepts, as its input schema lists them.
SCHEDULERS = ("DDIM", "K_EULER", "DPMSolverMultistep", "K_EULER_ANCESTRAL", "PNDM", "KLMS")

DEFAULTS = {
    "prompt_strength": 0.8,
    "num_outputs": 1,
    "num_inference_steps": 25,
    "guidance_scale": 7.5,
    "scheduler": "DPMSolverMultistep",
    "seed": None,
    "negative_prompt": "",
}

MIN_PROMPT_STRENGTH, MAX_PROMPT_STRENGTH = 0.0, 1.0
MIN_OUTPUTS, MAX_OUTPUTS = 1, 4
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 1.0, 20.0
MAX_SEED = 2**32 - 1
MAX_NEGATIVE_PROMPT_LENGTH = 500

#: The line stable-diffusion models write to their logs before they run.
SEED_PATTERN = re.compile(r"Using seed: (\d+)")


def complete(settings):
    """Return settings with every missing key filled from DEFAULTS."""
    return {**DEFAULTS, **(settings or {})}


def model_input(settings):
    """Return the model inputs for settings, leaving out the ones that are unset."""
    values = complete(settings)
    if values["seed"] is None:
        del values["seed"]
    if not values["negative_prompt"]:
        del values["negative_prompt"]
    return values


def reported_seed(logs):
    """Return the seed a run reported in its logs, or None before it has."""
    match = SEED_PATTERN.search(logs or "")
    return int(match.group(1)) if match else None


def describe(settings):
    """Return the settings as a short line for a result card."""
    values = complete(settings)
    parts = [
        f"strength {values['prompt_strength']:g}",
        f"{values['num_inference_steps']} step{'' if values['num_inference_steps'] == 1 else 's'}",
        f"guidance {values['guidance_scale']:g}",
        values["scheduler"],
    ]
    if values["negative_prompt"]:
        parts.append(f"not “{values['negative_prompt']}”")
    return " · ".join(parts)

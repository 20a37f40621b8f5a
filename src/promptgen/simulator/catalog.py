"""The one model the simulator serves, described the way Replicate's API describes models."""

MODEL_OWNER = "stability-ai"
MODEL_NAME = "stable-diffusion-img2img"
MODEL = f"{MODEL_OWNER}/{MODEL_NAME}"

#: Id of the model's only version. It is fixed so that tests and cached lookups can rely on it.
VERSION_ID = "90376b0a00ae79f93a0d686a9df4b169d657ce253b1144ee03638914a6bbf38a"

VERSION_CREATED_AT = "2024-01-15T09:30:00.000000Z"
COG_VERSION = "0.9.4"

SCHEDULERS = ["DDIM", "K_EULER", "DPMSolverMultistep", "K_EULER_ANCESTRAL", "PNDM", "KLMS"]

#: Webhook events a prediction can subscribe to, in the order they can happen.
WEBHOOK_EVENTS = ["start", "output", "logs", "completed"]

INPUT_SCHEMA = {
    "type": "object",
    "title": "Input",
    "required": ["prompt", "image"],
    "properties": {
        "prompt": {
            "type": "string",
            "title": "Prompt",
            "x-order": 0,
            "description": "Text that describes the image to generate from the input image.",
        },
        "negative_prompt": {
            "type": "string",
            "title": "Negative Prompt",
            "x-order": 1,
            "description": "Things the output should not show.",
        },
        "image": {
            "type": "string",
            "title": "Image",
            "format": "uri",
            "x-order": 2,
            "description": "Starting image: an http(s) URL or a data URL.",
        },
        "prompt_strength": {
            "type": "number",
            "title": "Prompt Strength",
            "default": 0.8,
            "minimum": 0,
            "maximum": 1,
            "x-order": 3,
            "description": "How far to move away from the input image; 1.0 discards it entirely.",
        },
        "num_outputs": {
            "type": "integer",
            "title": "Num Outputs",
            "default": 1,
            "minimum": 1,
            "maximum": 4,
            "x-order": 4,
            "description": "Number of images to generate.",
        },
        "num_inference_steps": {
            "type": "integer",
            "title": "Num Inference Steps",
            "default": 25,
            "minimum": 1,
            "maximum": 500,
            "x-order": 5,
            "description": "Number of denoising steps.",
        },
        "guidance_scale": {
            "type": "number",
            "title": "Guidance Scale",
            "default": 7.5,
            "minimum": 1,
            "maximum": 20,
            "x-order": 6,
            "description": "Scale for classifier-free guidance.",
        },
        "scheduler": {
            "allOf": [{"$ref": "#/components/schemas/scheduler"}],
            "default": "DPMSolverMultistep",
            "x-order": 7,
            "description": "Scheduler that drives the denoising steps.",
        },
        "seed": {
            "type": "integer",
            "title": "Seed",
            "x-order": 8,
            "description": "Random seed. Leave blank to randomize the seed.",
        },
    },
}

COMPONENT_SCHEMAS = {
    "Input": INPUT_SCHEMA,
    "Output": {
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "title": "Output",
    },
    "scheduler": {
        "enum": SCHEDULERS,
        "type": "string",
        "title": "scheduler",
        "description": "An enumeration.",
    },
}


def input_defaults():
    """Return the default value of every input that has one."""
    return {
        name: spec["default"]
        for name, spec in INPUT_SCHEMA["properties"].items()
        if "default" in spec
    }


def enum_values(spec):
    """Return the allowed values of an input whose schema refers to an enumeration, or None."""
    references = spec.get("allOf")
    if not references:
        return None

    name = references[0]["$ref"].rsplit("/", 1)[-1]
    return COMPONENT_SCHEMAS[name]["enum"]


def version_json():
    """Return the model version as GET /v1/models/{owner}/{name}/versions/{id} returns it."""
    return {
        "id": VERSION_ID,
        "created_at": VERSION_CREATED_AT,
        "cog_version": COG_VERSION,
        "openapi_schema": {
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "paths": {},
            "components": {"schemas": COMPONENT_SCHEMAS},
        },
    }


def model_json(run_count):
    """Return the model as GET /v1/models/{owner}/{name} returns it."""
    return {
        "url": f"https://replicate.com/{MODEL}",
        "owner": MODEL_OWNER,
        "name": MODEL_NAME,
        "description": "A local stand-in for Stable Diffusion image-to-image: "
        "it recolors the input photo and writes the prompt on it.",
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "cover_image_url": None,
        "run_count": run_count,
        "default_example": None,
        "latest_version": version_json(),
    }

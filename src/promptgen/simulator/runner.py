"""The background run of one prediction: status changes, logs, output files and webhooks."""

import logging
import random
import time

import httpx

from .generate import generate_image
from .images import InvalidImage, decode_data_url, download_image, is_data_url, open_image
from .inputs import with_defaults
from .progress import progress_line
from .store import timestamp

logger = logging.getLogger(__name__)

#: Share of the delay a prediction spends in "starting" before it turns "processing".
STARTING_SHARE = 0.1

#: Replicate sends "logs" and "output" webhooks at most once every 500 ms, according to
#: https://replicate.com/docs/topics/webhooks/setup-webhook.
LOGS_EVENT_INTERVAL = 0.5

RUNNING = frozenset({"starting", "processing"})


class PredictionRun:
    """Runs one stored prediction to a terminal status. Call run() in its own thread."""

    def __init__(self, simulator, prediction):
        self.store = simulator.store
        self.sender = simulator.sender
        self.faults = simulator.faults
        self.settings = simulator.settings
        self.id = prediction["id"]
        self.base_url = prediction["urls"]["get"].removesuffix(f"v1/predictions/{self.id}")
        self.input = with_defaults(prediction["input"])
        self._logs_event_at = 0.0

    def run(self):
        """Run the prediction, and fail it if an unexpected error occurs."""
        try:
            self._run()
        except Exception:
            logger.exception("prediction %s failed with an unexpected error", self.id)
            self._fail("The simulator failed with an internal error. Its log has the traceback.")

    def _run(self):
        if self.store.wait_until_finished(self.id, self.settings.delay * STARTING_SHARE):
            return

        seed = self._seed()
        started = time.monotonic()
        prediction = self.store.transition(
            self.id,
            {"starting"},
            "processing",
            started_at=timestamp(),
            logs=f"Using seed: {seed}\n",
        )
        if prediction is None:
            return
        logger.info("prediction %s processing with seed %d", self.id, seed)
        self._send_logs_event(prediction)

        try:
            source = self._load_source()
        except (InvalidImage, httpx.HTTPError) as error:
            self._fail(f"Could not read the input image: {error}")
            return

        images = self._generate(source, seed)
        if not self._show_progress(started):
            return
        if self.faults.get("fail_predictions"):
            self._fail("The model failed, as the fail_predictions switch asks.")
            return
        self._succeed(images, started)

    def _seed(self):
        if "seed" in self.input:
            return int(self.input["seed"])
        # Replicate's Stable Diffusion predictors pick a random 16-bit seed when none is given.
        return random.randrange(2**16)

    def _load_source(self):
        image = self.input["image"]
        if is_data_url(image):
            data = decode_data_url(image)
        else:
            data = download_image(image, self.settings.max_image_bytes, self.settings.image_timeout)
        return open_image(data, self.settings.max_image_pixels)

    def _generate(self, source, seed):
        """Return the PNG bytes of every output. Output n uses seed + n, so all of them differ."""
        return [
            generate_image(
                source,
                self.input["prompt"],
                seed + index,
                strength=float(self.input["prompt_strength"]),
                guidance_scale=float(self.input["guidance_scale"]),
                negative_prompt=self.input.get("negative_prompt", ""),
            )
            for index in range(int(self.input["num_outputs"]))
        ]

    def _show_progress(self, started):
        """Append progress lines until the delay is over, or return False once it is canceled."""
        # Image-to-image pipelines skip the first (1 - strength) of the denoising schedule, so
        # their progress bar counts int(steps * strength) steps.
        steps = int(self.input["num_inference_steps"])
        total = max(1, int(steps * float(self.input["prompt_strength"])))
        processing_time = self.settings.delay * (1 - STARTING_SHARE)

        if not self._append_logs(progress_line(0, total, 0.0)):
            return False
        for done in range(1, total + 1):
            # Steps are due at fixed times after the start, so time spent generating the
            # images counts toward the delay instead of adding to it.
            due = started + processing_time * done / total
            if self.store.wait_until_finished(self.id, max(0.0, due - time.monotonic())):
                return False
            if not self._append_logs(progress_line(done, total, time.monotonic() - started)):
                return False
        return True

    def _append_logs(self, line):
        prediction = self.store.append_logs(self.id, line + "\n")
        if prediction is None:
            return False
        self._send_logs_event(prediction)
        return True

    def _send_logs_event(self, prediction):
        now = time.monotonic()
        if now - self._logs_event_at >= LOGS_EVENT_INTERVAL:
            self._logs_event_at = now
            self.sender.send(prediction, "logs")

    def _succeed(self, images, started):
        output = [f"{self.base_url}files/{self.id}/{index}.png" for index in range(len(images))]
        predict_time = time.monotonic() - started
        prediction = self.store.transition(
            self.id,
            {"processing"},
            "succeeded",
            files=images,
            output=output,
            metrics={"predict_time": round(predict_time, 6)},
        )
        if prediction is None:
            return

        logger.info(
            "prediction %s succeeded in %.2f s, output files: %d",
            self.id,
            predict_time,
            len(output),
        )
        if self.faults.get("expire_outputs"):
            # The webhook still carries the output URLs, as it would have before the removal.
            self.store.remove_files(self.id)
            logger.info("prediction %s: output files removed by the expire_outputs switch", self.id)
        self.sender.send(prediction, "output")
        self.sender.send(prediction, "completed")

    def _fail(self, message):
        prediction = self.store.transition(self.id, RUNNING, "failed", error=message)
        if prediction is None:
            return

        logger.warning("prediction %s failed: %s", self.id, message)
        self.sender.send(prediction, "completed")

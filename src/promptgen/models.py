"""Database models: accounts, prompts, their predictions and received webhooks."""

import secrets
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, func, or_, select
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import generate_password_hash

from .extensions import db


#: SQLite hands out the id of a deleted last row again unless a table has AUTOINCREMENT.
#: Webhook tokens and URLs name rows by id, so an id must never come back.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Stored lower-cased, so uniqueness ignores case.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    #: Part of every session cookie's user id; a new value logs out all existing sessions.
    session_token: Mapped[str] = mapped_column(String(64), default=lambda: secrets.token_hex(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompts: Mapped[list["Prompt"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    @staticmethod
    def normalize_email(email):
        return email.strip().lower()

    def set_password(self, password):
        self.password_hash = generate_password_hash(password)

    def get_id(self):
        """Return the id Flask-Login keeps in the session: the row id and the session token."""
        return f"{self.id}:{self.session_token}"

    def end_sessions(self):
        """Invalidate every session of this account, the current one included."""
        self.session_token = secrets.token_hex(16)


class Prompt(db.Model):
    __tablename__ = "prompts"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    #: The text prompt sent to the model.
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    #: The uploaded photo after orientation, RGB conversion and resizing.
    image: Mapped[bytes] = mapped_column(LargeBinary)
    image_mime: Mapped[str] = mapped_column(String(32))
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="prompts")
    predictions: Mapped[list["Prediction"]] = relationship(
        back_populates="prompt",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Prediction.id.desc()",
    )


class Prediction(db.Model):
    """One run of the model on a prompt, mirrored from Replicate.

    Status follows Replicate's prediction statuses, plus "queued" for a row whose create
    request has not been sent yet. It only moves forward, and a terminal status never changes.
    """

    __tablename__ = "predictions"

    QUEUED = "queued"
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    #: Position of each status in the forward-only order.
    ORDER = {QUEUED: 0, STARTING: 1, PROCESSING: 2, SUCCEEDED: 3, FAILED: 3, CANCELED: 3}
    TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(
        ForeignKey("prompts.id", ondelete="CASCADE"), index=True
    )
    replicate_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    #: Model settings chosen for this run (see promptgen.settings); missing keys take defaults.
    settings: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")
    #: Copies of the prompt's text, photo and photo MIME type, taken when the row is created so
    #: that a later edit of the prompt does not change this run. Rows created before these
    #: columns existed have NULL, and prompt_text and photo then read the prompt instead.
    input_text: Mapped[str | None] = mapped_column(Text)
    #: Loaded only when read, because pages load many rows and never show this copy.
    input_image: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    input_mime: Mapped[str | None] = mapped_column(String(32))
    #: When the first create request was sent. A retry that finds it set looks for the
    #: prediction that request may have created before it creates another one.
    sent_at: Mapped[datetime | None]
    create_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    #: Output URLs that the store job downloads the images from, in the model's order.
    output_urls: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    download_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    #: True when Replicate removed the output before the store job could download it.
    output_expired: Mapped[bool] = mapped_column(default=False, server_default="0")
    #: Replicate's error, or why the output could not be stored.
    error: Mapped[str | None] = mapped_column(Text)
    logs: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Time of the last change to the row, or of the last reconcile check that found none.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    prompt: Mapped[Prompt] = relationship(back_populates="predictions")
    images: Mapped[list["PredictionImage"]] = relationship(
        back_populates="prediction",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="PredictionImage.position",
    )
    deliveries: Mapped[list["WebhookDelivery"]] = relationship(
        back_populates="prediction",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="WebhookDelivery.id",
    )

    __table_args__ = (
        Index("ix_predictions_status_updated_at", "status", "updated_at"),
        NEVER_REUSE_IDS,
    )

    @classmethod
    def for_prompt(cls, prompt, settings):
        """Return a new queued row for prompt that keeps a copy of its current text and photo."""
        return cls(
            prompt=prompt,
            settings=settings,
            input_text=prompt.title,
            input_image=prompt.image,
            input_mime=prompt.image_mime,
        )

    @property
    def prompt_text(self):
        """Text prompt of this run, from its own copy or, in older rows, from the prompt."""
        if self.input_text is None:
            return self.prompt.title
        return self.input_text

    @property
    def photo(self):
        """Input photo of this run as (data, MIME type), from its own copy or, in older rows, the prompt."""
        if self.input_image is None:
            return self.prompt.image, self.prompt.image_mime
        return self.input_image, self.input_mime

    @property
    def is_pending(self):
        """True while the model may still run: queued, starting or processing."""
        return self.status not in self.TERMINAL

    @property
    def has_all_images(self):
        """True once every output of a succeeded run is stored."""
        return bool(self.output_urls) and len(self.images) >= len(self.output_urls)

    @property
    def is_final(self):
        """True once nothing about this row will change: all images, an error or a cancel."""
        if self.status == self.SUCCEEDED:
            return self.has_all_images or self.error is not None
        return self.status in self.TERMINAL

    @classmethod
    def lacks_images(cls):
        """SQL condition: the row has not succeeded yet, or some of its outputs are not stored."""
        stored = (
            select(func.count(PredictionImage.id))
            .where(PredictionImage.prediction_id == cls.id)
            .scalar_subquery()
        )
        return or_(cls.status != cls.SUCCEEDED, stored < func.json_array_length(cls.output_urls))

    def advance(self, status):
        """Move to status if it comes later than the current one; return whether it moved."""
        if status not in self.ORDER:
            raise ValueError(f"unknown prediction status {status!r}")
        if self.status in self.TERMINAL:
            return False
        if self.ORDER[status] <= self.ORDER[self.status]:
            return False

        self.status = status
        if status in (self.STARTING, self.PROCESSING) and self.started_at is None:
            self.started_at = utcnow()
        if status in self.TERMINAL:
            self.completed_at = utcnow()
        return True


class PredictionImage(db.Model):
    """One output image of a prediction, with a smaller JPEG preview for its card."""

    __tablename__ = "prediction_images"
    __table_args__ = (UniqueConstraint("prediction_id", "position"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))
    #: Index of the image in the prediction's output list, from 0.
    position: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    mime: Mapped[str] = mapped_column(String(32))
    #: JPEG made once when the image is stored; pages show this, downloads send data.
    preview: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prediction: Mapped[Prediction] = relationship(back_populates="images")


class WebhookDelivery(db.Model):
    """A webhook request that passed verification, kept so a repeat is recognized.

    Replicate's requests do not name the event that caused them, so event is derived from
    the body: "start" for starting, "completed" for a terminal status, and "output" or
    "logs" for processing, depending on whether the body has an output yet.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The webhook-id header, which Replicate keeps across retries of one delivery.
    webhook_id: Mapped[str] = mapped_column(String(128), unique=True)
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    prediction: Mapped[Prediction] = relationship(back_populates="deliveries")

    @staticmethod
    def event_for(payload):
        """Return the webhook event that a prediction body with this status was sent for."""
        status = payload.get("status")
        if status in Prediction.TERMINAL:
            return "completed"
        if status == Prediction.STARTING:
            return "start"
        return "output" if payload.get("output") else "logs"

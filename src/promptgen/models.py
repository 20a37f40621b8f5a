"""Database models: accounts, prompts, their predictions and received webhooks."""

from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Stored lower-cased, so uniqueness ignores case.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompts: Mapped[list["Prompt"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    @staticmethod
    def normalize_email(email):
        return email.strip().lower()

    def set_password(self, password):
        self.password_hash = generate_password_hash(password)

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)


class Prompt(db.Model):
    __tablename__ = "prompts"

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
    #: Output URL that the store job downloads the image from.
    output_url: Mapped[str | None] = mapped_column(Text)
    image: Mapped[bytes | None] = mapped_column(LargeBinary)
    image_mime: Mapped[str | None] = mapped_column(String(32))
    #: Replicate's error, or why the output could not be stored.
    error: Mapped[str | None] = mapped_column(Text)
    logs: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    prompt: Mapped[Prompt] = relationship(back_populates="predictions")

    @property
    def is_final(self):
        """True once nothing about this row will change: an image, an error or a cancel."""
        if self.status == self.SUCCEEDED:
            return self.image is not None or self.error is not None
        return self.status in self.TERMINAL

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


class WebhookDelivery(db.Model):
    """A webhook request that passed verification, kept so a repeat is recognized."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The webhook-id header, which Replicate keeps across retries of one delivery.
    webhook_id: Mapped[str] = mapped_column(String(128), unique=True)
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

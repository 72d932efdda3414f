"""Notification channels: webhook (HMAC-signed), email over SMTP, MQTT and the console stream.

Each channel sends one delivery and reports a ``SendResult``; it never raises for a failed
send, so one broken channel cannot stop the others. Retrying is the delivery worker's job.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from email.message import EmailMessage

import httpx
from psycopg_pool import AsyncConnectionPool

from alerts.flows import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    email_subject,
    email_text,
    sign,
    webhook_body,
)
from alerts.models import ChannelKind, Delivery, SendResult
from vigil import notify
from vigil.broker import Publisher
from vigil.config import AlertsSettings

# Client errors that a retry cannot fix (408 and 429 are worth retrying).
_PERMANENT_HTTP = frozenset(range(400, 500)) - {408, 425, 429}


class Channels:
    """Sends deliveries over whichever channel each one names."""

    def __init__(
        self,
        *,
        settings: AlertsSettings,
        mqtt: Publisher,
        pool: AsyncConnectionPool,
        http: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._mqtt = mqtt
        self._pool = pool
        self._http = http

    async def send(self, delivery: Delivery, *, timestamp_ms: int) -> SendResult:
        """Send one delivery; any failure comes back as a result, never as an exception."""
        try:
            if delivery.channel is ChannelKind.WEBHOOK:
                return await self.send_webhook(delivery, timestamp_ms=timestamp_ms)
            if delivery.channel is ChannelKind.EMAIL:
                return await asyncio.to_thread(self.send_email, delivery)
            if delivery.channel is ChannelKind.MQTT:
                return await self.send_mqtt(delivery)
            return await self.send_console(delivery)
        except Exception as exc:  # a channel's bug must not stop the other deliveries
            return SendResult(ok=False, detail=f"{type(exc).__name__}: {exc}")

    async def send_webhook(self, delivery: Delivery, *, timestamp_ms: int) -> SendResult:
        """POST the payload as JSON, signed with HMAC-SHA256 over ``timestamp.body``."""
        body = webhook_body(delivery.payload)
        timestamp = str(timestamp_ms)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: str(delivery.id),
        }
        if self._settings.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(
                secret=self._settings.webhook_secret, timestamp=timestamp, body=body
            )
        try:
            response = await self._http.post(
                delivery.address,
                content=body,
                headers=headers,
                timeout=self._settings.webhook_timeout_s,
            )
        except httpx.HTTPError as exc:
            return SendResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return SendResult(ok=True, detail=f"HTTP {response.status_code}")
        return SendResult(
            ok=False,
            detail=f"HTTP {response.status_code}",
            retryable=response.status_code not in _PERMANENT_HTTP,
        )

    def send_email(self, delivery: Delivery) -> SendResult:
        """Send a plain-text email over SMTP (blocking: run it in a thread)."""
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = delivery.address
        message["Subject"] = email_subject(delivery.payload)
        message["X-Vigil-Delivery"] = str(delivery.id)
        message.set_content(email_text(delivery.payload))
        try:
            with smtplib.SMTP(
                self._settings.smtp_host,
                self._settings.smtp_port,
                timeout=self._settings.webhook_timeout_s,
            ) as smtp:
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            return SendResult(ok=False, detail=f"recipient refused: {exc}", retryable=False)
        except (OSError, smtplib.SMTPException) as exc:
            return SendResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
        return SendResult(ok=True, detail="accepted by SMTP server")

    async def send_mqtt(self, delivery: Delivery) -> SendResult:
        """Publish the payload at QoS 1 under the alerts topic prefix."""
        topic = f"{self._settings.mqtt_topic_prefix}/{delivery.address}"
        body = webhook_body(delivery.payload)
        # the process's one MQTT client (paho's thread does the network)
        if not await asyncio.to_thread(self._mqtt.publish, topic, body, qos=1):
            return SendResult(ok=False, detail="MQTT: the broker did not acknowledge")
        return SendResult(ok=True, detail=f"published to {topic}")

    async def send_console(self, delivery: Delivery) -> SendResult:
        """Announce the message on the live-stream channel that consoles listen to."""
        text = json.dumps(
            {
                "kind": "notification",
                "delivery_id": delivery.id,
                "address": delivery.address,
                "audience": delivery.audience.value,
                "subject_type": delivery.subject_type,
                "subject_id": delivery.subject_id,
                "reason": delivery.reason,
                "message": str(delivery.payload.get("message", ""))[:2000],
            },
            default=str,
        )
        async with self._pool.connection() as conn:
            await notify.asend(conn, notify.ALERTS, [text])
        return SendResult(ok=True, detail="announced on the live stream")

"""Notifiers: Slack incoming webhook, SMTP e-mail (STARTTLS or implicit TLS, auth) and the log.

Secrets (the webhook URL, the SMTP password) are registered for redaction when the settings load;
errors are reported through :func:`its_common.redaction.redact` and never include the URL.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from email.message import EmailMessage
from typing import Final, Protocol

import aiohttp
import aiosmtplib

from its_alerter.config import AlerterSettings
from its_alerter.model import SEVERITY_RANK, Notification
from its_common.backoff import Backoff, retry_after_s
from its_common.redaction import redact

log = logging.getLogger("its.alerter.notify")
COLORS: Final = {"critical": "#d32f2f", "warning": "#f9a825", "info": "#1976d2"}
RESOLVED_COLOR: Final = "#2e7d32"


class NotifyError(Exception):
    """A notification that could not be delivered (message is safe to log)."""


class Notifier(Protocol):
    name: str
    min_severity: str

    async def send(self, notification: Notification) -> None: ...

    async def close(self) -> None: ...


class LogNotifier:
    name = "log"
    min_severity = "info"

    async def send(self, notification: Notification) -> None:
        level = logging.INFO if notification.state == "resolved" else logging.WARNING
        if notification.severity == "info":
            level = logging.INFO
        log.log(
            level,
            "alert %s %s: %s",
            "event" if notification.event else notification.state,
            notification.rule,
            notification.message,
            extra={
                "alert_rule": notification.rule,
                "fingerprint": notification.fingerprint,
                "severity": notification.severity,
                "state": notification.state,
                "labels": notification.labels,
            },
        )

    async def close(self) -> None:
        return None


def slack_payload(notification: Notification) -> dict[str, object]:
    color = RESOLVED_COLOR if notification.state == "resolved" else COLORS[notification.severity]
    fields = [
        {"title": key, "value": str(value), "short": True}
        for key, value in sorted(notification.labels.items())
    ]
    return {
        "text": f"{notification.title}: {notification.message}",
        "attachments": [
            {
                "color": color,
                "fallback": notification.text(),
                "fields": fields,
                "footer": f"its-alerter {notification.fingerprint}",
                "ts": notification.ts_ms // 1000,
            }
        ],
    }


SLACK_MAX_WAIT_S: Final = 10.0  # longest wait between two tries, even if Retry-After asks more


class SlackNotifier:
    """POST JSON to an incoming webhook; 429 and 5xx are retried (Retry-After, else Backoff)."""

    name = "slack"

    def __init__(
        self, url: str, timeout_s: float, min_severity: str = "info", retries: int = 2
    ) -> None:
        self._url = url
        self.min_severity = min_severity
        self.retries = retries
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return "SlackNotifier(url=***)"

    async def send(self, notification: Notification) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        payload = slack_payload(notification)
        backoff = Backoff(1.0, SLACK_MAX_WAIT_S)
        for attempt in range(self.retries + 1):
            try:
                async with self._session.post(self._url, json=payload) as response:
                    body = (await response.text())[:200]
                    if response.status < 300:
                        return
                    retryable = response.status == 429 or response.status >= 500
                    problem = f"webhook answered {response.status}: {body}"
                    retry_after = retry_after_s(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                # aiohttp errors can carry the URL (the secret): only the type goes out.
                retryable, problem = True, f"webhook unreachable ({type(exc).__name__})"
                retry_after = None
            if not retryable or attempt == self.retries:
                raise NotifyError(redact(problem))
            delay = backoff.next_delay() if retry_after is None else retry_after
            await asyncio.sleep(min(delay, SLACK_MAX_WAIT_S))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EmailNotifier:
    """One e-mail per notification through SMTP (aiosmtplib): STARTTLS or TLS, optional auth."""

    name = "email"

    def __init__(self, settings: AlerterSettings, min_severity: str = "info") -> None:
        self.settings = settings
        self.min_severity = min_severity
        context = ssl.create_default_context()
        if settings.smtp_ca_file:
            context.load_verify_locations(cafile=settings.smtp_ca_file)
        self.tls_context = context

    def message(self, notification: Notification) -> EmailMessage:
        s = self.settings
        msg = EmailMessage()
        msg["From"] = s.smtp_from
        msg["To"] = ", ".join(s.smtp_to)
        msg["Subject"] = f"{notification.title}: {notification.message}"[:200]
        msg["X-ITS-Fingerprint"] = notification.fingerprint
        msg.set_content(notification.text() + "\n")
        return msg

    async def send(self, notification: Notification) -> None:
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            await aiosmtplib.send(
                self.message(notification),
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username or None,
                password=password if s.smtp_username else None,
                use_tls=s.smtp_ssl,
                start_tls=s.smtp_starttls and not s.smtp_ssl,
                tls_context=self.tls_context,
                timeout=s.smtp_timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise NotifyError(redact(f"SMTP {s.smtp_host}:{s.smtp_port}: {exc}")) from None

    async def close(self) -> None:
        return None


def build_notifiers(settings: AlerterSettings) -> list[Notifier]:
    notifiers: list[Notifier] = [LogNotifier()]
    if settings.slack_webhook_url is not None and settings.slack_webhook_url.get_secret_value():
        notifiers.append(
            SlackNotifier(
                settings.slack_webhook_url.get_secret_value(),
                settings.slack_timeout_s,
                settings.notify_min_severity,
            )
        )
    if settings.smtp_host and settings.smtp_to:
        notifiers.append(EmailNotifier(settings, settings.notify_min_severity))
    return notifiers


def wants(notifier: Notifier, notification: Notification) -> bool:
    return SEVERITY_RANK[notification.severity] >= SEVERITY_RANK[notifier.min_severity]

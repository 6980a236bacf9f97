"""Security headers for every page and API response.

The pages load only their own scripts and styles (no inline code), talk only to
their own origin (WebRTC media is not governed by ``connect-src``), may not be
framed, send no ``Referer`` (a page URL could carry a room), and are the only
ones allowed the camera and microphone.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # data: for the empty favicon
    "media-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

PERMISSIONS_POLICY = ", ".join([
    "camera=(self)", "microphone=(self)", "display-capture=()", "geolocation=()", "payment=()", "usb=()",
    "serial=()", "bluetooth=()", "hid=()", "midi=()", "accelerometer=()", "gyroscope=()", "magnetometer=()",
])

#: A year; sent only on responses that came over TLS.
HSTS = "max-age=31536000"

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": PERMISSIONS_POLICY,
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def security_headers(tls: bool) -> dict[str, str]:
    """The headers for one response; ``tls``: it is served over HTTPS by this process."""
    return {**SECURITY_HEADERS, "Strict-Transport-Security": HSTS} if tls else dict(SECURITY_HEADERS)

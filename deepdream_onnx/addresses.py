"""Network addresses the servers and the cluster client treat specially."""

import ipaddress


def is_loopback(host):
    """Whether host (a name or an IP address) is this machine's loopback: localhost, 127.x, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

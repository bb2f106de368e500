"""What the SSH agent tells about its guest besides files: shell history, login environment, probes.

Sent to the guest in front of vmlfs/backends/ssh_agent.py (``AGENT_SOURCE`` in
vmlfs/backends/ssh_guest.py), so like the agent it stays stdlib-only and runs
on python3.6; the wire format is in docs/ssh.md.
"""

import os
import struct

ENV_COMMAND = 'printf "\\000vmlfs-env-begin\\000"; exec env -0'


def history(root, out):
    for name in (b".bash_history", b".zsh_history"):
        try:
            fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            blob(out, b"Y", f.read())
        return
    out.write(b"N")


def blob(out, tag, data):
    out.write(tag + struct.pack("<Q", len(data)) + data)


def command_output(argv, stdin):
    """stdout of a local command on the guest (a constant script of vmlfs; never user text)."""
    import subprocess
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc.communicate(stdin)[0]


def login_shell():
    import pwd
    return os.environ.get("SHELL") or pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"


def login_environment(timeout):
    """The environment as the user's shell sets it up: an interactive login shell (so ~/.bashrc runs,
    past its 'interactive only' guard), without a terminal, stdin closed, killed after ``timeout`` s
    (then nothing is returned and the caller says why)."""
    import subprocess
    proc = subprocess.Popen([login_shell(), "-l", "-i", "-c", ENV_COMMAND], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return b""

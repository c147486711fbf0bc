"""Other machines of the farm, reached over SSH (farm.remote.ssh is the only paramiko user)."""
from farm.remote.ssh import (Fetched, RemoteFileError, RemoteTimeout, SSHHost, SyncResult, Transfer,
                             TransferFailed, UnknownHostKey)

__all__ = ["SSHHost", "Transfer", "SyncResult", "Fetched", "UnknownHostKey", "TransferFailed",
           "RemoteFileError", "RemoteTimeout"]

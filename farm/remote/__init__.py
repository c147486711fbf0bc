"""Other machines of the farm, reached over SSH (farm.remote.ssh is the only paramiko user;
farm.remote.transfer copies files through it)."""
from farm.remote.ssh import RemoteFileError, RemoteTimeout, SSHHost, UnknownHostKey
from farm.remote.transfer import Fetched, SyncResult, Transfer, TransferFailed

__all__ = ["SSHHost", "Transfer", "SyncResult", "Fetched", "UnknownHostKey", "TransferFailed",
           "RemoteFileError", "RemoteTimeout"]

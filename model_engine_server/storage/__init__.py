"""Object storage: files, batch inputs and outputs, job workspaces. One small port, two implementations."""

from model_engine_server.storage.port import ObjectNotFoundError, ObjectStore, ObjectStoreError

__all__ = ["ObjectNotFoundError", "ObjectStore", "ObjectStoreError"]

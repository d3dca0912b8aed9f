"""Object storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, GCS's S3 API) through boto3.

Credentials come from boto3's usual chain (environment, IRSA / Workload Identity, instance profile); they are never
settings of ours, so they never reach our logs. A PUT is atomic in S3: readers see the old object or the new one.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from model_engine_server.storage.port import ObjectNotFoundError, ObjectStoreError


class _CountingReader:
    """Counts the bytes boto3 reads, so ``put_file`` can report the stored size without a second request."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self.count += len(chunk)
        return chunk


class S3ObjectStore:
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None):
        import boto3  # imported here: only S3 deployments pay for it

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        if ".." in key.split("/"):
            raise ValueError(f"object key {key!r} leaves the store")
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, source: BinaryIO) -> int:
        # upload_fileobj switches to a multipart upload for large files; S3 shows the object only once it completes
        # and an aborted multipart upload leaves no object behind.
        reader = _CountingReader(source)
        self._client.upload_fileobj(reader, self.bucket, self._key(key))
        return reader.count

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A URL that reads the object without credentials until ``expires_in`` seconds have passed."""
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        url: str = self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        return url

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self._client.exceptions.NoSuchKey as error:
            raise ObjectNotFoundError(key) from error
        except Exception as error:
            if _status(error) in (403, 404):
                raise ObjectNotFoundError(key) from error
            from botocore.exceptions import BotoCoreError, ClientError  # here, like boto3: only S3 deployments load it

            if isinstance(error, BotoCoreError | ClientError):  # unreachable, invalid bucket name, throttled...
                raise ObjectStoreError(f"s3://{self.bucket}/{self._key(key)}: {error}") from error
            raise
        return body

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as error:
            if _status(error) == 404:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        ):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None

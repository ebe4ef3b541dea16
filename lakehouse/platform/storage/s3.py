"""``s3://BUCKET[/prefix]`` backend over boto3 (AWS, MinIO, SeaweedFS).

Bodies stream through in parts of ``s3_part_size``: a body that fits in one part is a single
PutObject; anything larger is a multipart upload, aborted on any error, so a reader never
sees a partial object and nothing is held in memory beyond one part.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lakehouse.platform.errors import NotFound, Unavailable
from lakehouse.platform.storage import (
    LIST_LIMIT,
    READ_CHUNK,
    Listing,
    ObjectInfo,
    Storage,
    blocks,
    validate_key,
)

if TYPE_CHECKING:
    from lakehouse.platform.config import Settings

MIN_PART = 5 << 20


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str, client: Any, part_size: int) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client
        self.part_size = max(MIN_PART, part_size)
        self.url = f"s3://{bucket}/{self.prefix}"
        self._bucket_checked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        st = settings.storage
        rest = settings.storage_url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        ca = st.s3_ca_file  # an https endpoint signed by a private CA
        client = boto3.client(
            "s3",
            endpoint_url=st.s3_endpoint,
            verify=str(ca) if ca is not None else None,
            region_name=st.s3_region,
            aws_access_key_id=st.s3_access_key.get_secret_value() if st.s3_access_key else None,
            aws_secret_access_key=(
                st.s3_secret_key.get_secret_value() if st.s3_secret_key else None
            ),
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=min(5.0, st.s3_timeout),
                read_timeout=st.s3_timeout,
                max_pool_connections=32,
            ),
        )
        return cls(bucket, prefix, client, st.s3_part_size)

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"no object {kwargs.get('Key', '')[len(self.prefix) :]!r}") from None
            raise Unavailable(f"storage error ({code or 'unknown'}) on {method}") from None
        except BotoCoreError as exc:  # e.g. a timeout (storage.s3_timeout): retryable
            raise Unavailable(f"storage unreachable ({type(exc).__name__}) on {method}") from None

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (idempotent)."""
        if self._bucket_checked:
            return
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except ClientError:
            try:
                await asyncio.to_thread(self.client.create_bucket, Bucket=self.bucket)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise Unavailable(f"cannot create bucket {self.bucket!r} ({code})") from None
        except BotoCoreError as exc:
            raise Unavailable(f"storage unreachable: {type(exc).__name__}") from None
        self._bucket_checked = True

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int | None = None,
        sync: bool = True,
    ) -> ObjectInfo:
        k = self._key(key)
        await self.ensure_bucket()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def upload_part(body: bytes) -> None:
            n = len(parts) + 1
            resp = await self._call(
                "upload_part",
                Bucket=self.bucket,
                Key=k,
                UploadId=upload_id,
                PartNumber=n,
                Body=body,
            )
            parts.append({"ETag": resp["ETag"], "PartNumber": n})

        try:
            # One block held back: only the last block decides between a single PUT (a body
            # of at most one part) and completing a multipart upload.
            held: bytes | None = None
            async for block in blocks(chunks, self.part_size, max_bytes):
                if held is not None:
                    if upload_id is None:
                        resp = await self._call(
                            "create_multipart_upload", Bucket=self.bucket, Key=k
                        )
                        upload_id = resp["UploadId"]
                    await upload_part(held)
                held = block
            if upload_id is None:
                await self._call("put_object", Bucket=self.bucket, Key=k, Body=held or b"")
            else:
                await upload_part(held or b"")
                await self._call(
                    "complete_multipart_upload",
                    Bucket=self.bucket,
                    Key=k,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                upload_id = None
        except BaseException:
            if upload_id is not None:
                try:
                    await asyncio.shield(
                        asyncio.to_thread(
                            self.client.abort_multipart_upload,
                            Bucket=self.bucket,
                            Key=k,
                            UploadId=upload_id,
                        )
                    )
                except Exception:  # best effort; the bucket's lifecycle rule cleans up the rest
                    pass
            raise
        return await self.stat(key)

    async def open(self, key: str) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        k = self._key(key)
        resp = await self._call("get_object", Bucket=self.bucket, Key=k)
        info = ObjectInfo(key, int(resp["ContentLength"]), resp["LastModified"])
        stream = resp["Body"]

        async def body() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(stream.read, READ_CHUNK):
                    yield chunk
            except BotoCoreError as exc:  # cut off or timed out mid-body: retryable
                what = f"storage unreachable ({type(exc).__name__}) reading {key!r}"
                raise Unavailable(what) from None
            finally:
                stream.close()

        return info, body()

    async def stat(self, key: str) -> ObjectInfo:
        resp = await self._call("head_object", Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key, int(resp["ContentLength"]), resp["LastModified"])

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self._key(key))

    async def list(self, prefix: str = "", limit: int = LIST_LIMIT) -> Listing:
        await self.ensure_bucket()
        out: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": self.prefix + prefix,
                "MaxKeys": min(1000, limit + 1 - len(out)),
            }
            if token:
                kwargs["ContinuationToken"] = token
            resp = await self._call("list_objects_v2", **kwargs)
            for obj in resp.get("Contents", []):
                if len(out) == limit:
                    return Listing(out, True)
                key = obj["Key"][len(self.prefix) :]
                out.append(ObjectInfo(key, int(obj["Size"]), obj["LastModified"]))
            if not resp.get("IsTruncated"):
                return Listing(out, False)
            if len(out) == limit:
                return Listing(out, True)
            token = resp.get("NextContinuationToken")

"""Where data lives outside the workspace.

`s3`: S3 URLs, clients with retries, listings and reads. `published`: published index
versions and their CURRENT / LATEST pointers, in a folder or on S3.

Imports: `tasks.core`.
"""

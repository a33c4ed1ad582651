"""Air-gap bundles: export what a site lacks, import only what verifies (DESIGN.md "Bundles").

A bundle is an OCI image layout plus our manifest, as a directory or as a tar split into parts:

    mirror-bundle.json       format_version, ids, snapshots, catalog digest, blobs, parts
    mirror-bundle.json.sig   optional ed25519 signature of the manifest's exact bytes
    catalog.jsonl            the catalog delta (upserts and removals)
    oci-layout, index.json, blobs/sha256/<hex>
    (tar format: bundle.tar.NNN parts holding everything but the manifest and signature)

Trust flows one way: the signature covers the manifest, the manifest names the sha256 and size
of every part, of catalog.jsonl and of every blob. Import verifies all of it in a staging area
before anything is published.
"""

"""GLB meshes for the initialisation: geometry through node transforms, colours from vertex
colours or the base-colour texture, and clear errors for what is not supported."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.gaussians.mesh_io import read_mesh, sample_surface

# A unit quad in the xy-plane (two triangles), UVs covering the whole texture.
QUAD = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
QUAD_UV = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)  # glTF v points down
QUAD_IDX = np.array([0, 1, 2, 0, 2, 3], np.uint16)


def write_glb(
    path: Path,
    colors: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    node: dict | None = None,
    factor: list[float] | None = None,
    extensions: list[str] | None = None,
) -> Path:
    """A minimal GLB writer for the tests (one mesh, one node)."""
    blobs: list[bytes] = []
    views, accessors = [], []

    def add(array: np.ndarray, component: int, kind: str, target: int | None = None) -> int:
        data = array.tobytes()
        offset = sum(len(b) for b in blobs)
        blobs.append(data + b"\0" * (-len(data) % 4))
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target:
            view["target"] = target
        views.append(view)
        accessors.append(
            {
                "bufferView": len(views) - 1,
                "componentType": component,
                "count": len(array),
                "type": kind,
            }  # fmt: skip
        )
        return len(accessors) - 1

    attrs = {"POSITION": add(QUAD, 5126, "VEC3")}
    prim: dict = {"attributes": attrs, "indices": add(QUAD_IDX, 5123, "SCALAR")}
    doc: dict = {"asset": {"version": "2.0"}}
    if colors is not None:
        attrs["COLOR_0"] = add(colors.astype(np.float32), 5126, "VEC3")
    material: dict = {"pbrMetallicRoughness": {}}
    if factor is not None:
        material["pbrMetallicRoughness"]["baseColorFactor"] = factor
    if texture is not None:
        attrs["TEXCOORD_0"] = add(QUAD_UV, 5126, "VEC2")
        png = io.BytesIO()
        Image.fromarray(texture).save(png, format="PNG")
        png_bytes = png.getvalue()
        offset = sum(len(b) for b in blobs)
        blobs.append(png_bytes + b"\0" * (-len(png_bytes) % 4))
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(png_bytes)})
        doc["images"] = [{"bufferView": len(views) - 1, "mimeType": "image/png"}]
        doc["textures"] = [{"source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}
    doc["materials"] = [material]
    prim["material"] = 0
    binary = b"".join(blobs)
    doc.update(
        buffers=[{"byteLength": len(binary)}],
        bufferViews=views,
        accessors=accessors,
        meshes=[{"primitives": [prim]}],
        nodes=[{"children": [1], **(node or {})}, {"mesh": 0}],
        scenes=[{"nodes": [0]}],
        scene=0,
    )
    if extensions:
        doc["extensionsUsed"] = extensions
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    body += struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)
    return path


def test_glb_geometry_goes_through_the_node_hierarchy(tmp_path: Path) -> None:
    # Parent node: scale 2 then translate by (0, 0, 5); the mesh sits on the child.
    path = write_glb(tmp_path / "m.glb", node={"translation": [0, 0, 5], "scale": [2, 2, 2]})
    mesh = read_mesh(path)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    torch.testing.assert_close(mesh.verts, torch.from_numpy(QUAD * 2 + [0, 0, 5]).float())
    points, colors = sample_surface(mesh, 500, torch.Generator().manual_seed(0))
    assert torch.allclose(points[:, 2], torch.full((500,), 5.0))
    assert points[:, :2].min() >= 0 and points[:, :2].max() <= 2
    # No colour source at all: the material's (default white) base colour.
    assert torch.equal(colors, torch.ones(500, 3))


def test_glb_vertex_colours_are_interpolated_and_times_the_base_colour_factor(
    tmp_path: Path,
) -> None:
    colors = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]], np.float32)
    path = write_glb(tmp_path / "c.glb", colors=colors, factor=[0.5, 1, 1, 1])
    points, rgb = sample_surface(read_mesh(path), 400, torch.Generator().manual_seed(0))
    # Red at y = 0, blue at y = 1, linear in between; the factor halves red.
    torch.testing.assert_close(rgb[:, 0], 0.5 * (1 - points[:, 1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb[:, 2], points[:, 1], atol=1e-5, rtol=0)


def test_glb_texture_is_looked_up_at_each_samples_uv(tmp_path: Path) -> None:
    # 2x2 texture: top row red | green, bottom row blue | white (top = v 0 = y 1 on the quad).
    tex = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
    tex = tex.repeat(8, axis=0).repeat(8, axis=1)  # 16x16, so bilinear is exact inside cells
    path = write_glb(tmp_path / "t.glb", texture=tex)
    mesh = read_mesh(path)
    assert mesh.colors is None and len(mesh.textures) == 1
    points, rgb = sample_surface(mesh, 2000, torch.Generator().manual_seed(0))
    x, y = points[:, 0], points[:, 1]
    inner = ((x - 0.5).abs() > 0.1) & ((y - 0.5).abs() > 0.1)
    expect = torch.where(
        (y > 0.5)[:, None],
        torch.where((x < 0.5)[:, None], torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])),
        torch.where((x < 0.5)[:, None], torch.tensor([0, 0, 1.0]), torch.tensor([1.0, 1, 1])),
    )
    torch.testing.assert_close(rgb[inner], expect[inner], atol=1e-5, rtol=0)
    # And through the Gaussians' initialisation, normalised into the object's bounds.
    g = CanonicalGaussians.from_file(path, 300, normalize_radius=0.5)
    assert g.num_gaussians == 300 and g.means.norm(dim=1).max() <= 0.5 + 1e-5


def test_glb_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"NOPE" + b"\0" * 20)
    with pytest.raises(ValueError, match="bad.glb: not a binary glTF"):
        read_mesh(bad)
    draco = write_glb(tmp_path / "draco.glb", extensions=["KHR_draco_mesh_compression"])
    with pytest.raises(ValueError, match="draco.glb: compressed glTF"):
        read_mesh(draco)
    ok = write_glb(tmp_path / "cut.glb").read_bytes()
    (tmp_path / "cut.glb").write_bytes(ok[: len(ok) // 2])
    with pytest.raises(ValueError, match="cut.glb: truncated GLB"):
        read_mesh(tmp_path / "cut.glb")

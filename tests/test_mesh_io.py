"""Meshes for the initialisation (read by trimesh): GLB geometry through node transforms, colours
from vertex colours, the base-colour texture or an OBJ's MTL material, and clear errors naming the
file for what is broken or not supported."""

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
    image_bytes: bytes | None = None,
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
        png_bytes = png.getvalue() if image_bytes is None else image_bytes
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
    # Red at y = 0, blue at y = 1, linear in between; the factor halves red (trimesh keeps
    # material colours as 8-bit, so 0.5 arrives as 128/255).
    torch.testing.assert_close(rgb[:, 0], 0.5 * (1 - points[:, 1]), atol=1 / 255, rtol=0)
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
    meshopt = write_glb(tmp_path / "mo.glb", extensions=["EXT_meshopt_compression"])
    with pytest.raises(ValueError, match=r"mo.glb: compressed glTF \(EXT_meshopt"):
        read_mesh(meshopt)
    ok = write_glb(tmp_path / "cut.glb").read_bytes()
    (tmp_path / "cut.glb").write_bytes(ok[: len(ok) // 2])
    with pytest.raises(ValueError, match="cut.glb: truncated GLB"):
        read_mesh(tmp_path / "cut.glb")
    # trimesh skips an image it cannot open; the reader refuses rather than lose the colours.
    tex = np.zeros((4, 4, 3), np.uint8)
    broken = write_glb(tmp_path / "tex.glb", texture=tex, image_bytes=b"\x89PNG broken")
    with pytest.raises(ValueError, match="tex.glb: 1 of 1 base-colour textures could not be"):
        read_mesh(broken)
    # trimesh's own failure (an accessor past the end of the binary chunk) names the file too.
    doc_glb = write_glb(tmp_path / "acc.glb").read_bytes()
    size = struct.unpack_from("<I", doc_glb, 12)[0]
    doc = json.loads(doc_glb[20 : 20 + size])
    doc["accessors"][0]["count"] = 10_000
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + doc_glb[20 + size :]
    (tmp_path / "acc.glb").write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)
    with pytest.raises(ValueError, match="acc.glb: not a readable GLB file"):
        read_mesh(tmp_path / "acc.glb")


def write_textured_obj(folder: Path, texture: np.ndarray, kd: str = "") -> Path:
    """The unit quad as an OBJ whose MTL material has a ``map_Kd`` texture (OBJ UVs: v up)."""
    Image.fromarray(texture).save(folder / "albedo.png")
    (folder / "quad.mtl").write_text(f"newmtl skin\n{kd}map_Kd albedo.png\n")
    (folder / "quad.obj").write_text(
        "mtllib quad.mtl\n"
        + "".join(f"v {x} {y} {z}\n" for x, y, z in QUAD)
        + "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        + "usemtl skin\nf 1/1 2/2 3/3 4/4\n"
    )
    return folder / "quad.obj"


def test_obj_texture_from_its_mtl_is_looked_up_at_each_samples_uv(tmp_path: Path) -> None:
    # Same picture as the GLB test: red | green on top (y = 1), blue | white below.
    tex = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
    tex = tex.repeat(8, axis=0).repeat(8, axis=1)
    # A grey Kd next to map_Kd must not darken the texture (trimesh's to_color ignores it).
    mesh = read_mesh(write_textured_obj(tmp_path, tex, kd="Kd 0.4 0.4 0.4\n"))
    assert len(mesh.textures) == 1 and mesh.textures[0].shape == (16, 16, 3)
    points, rgb = sample_surface(mesh, 2000, torch.Generator().manual_seed(0))
    x, y = points[:, 0], points[:, 1]
    inner = ((x - 0.5).abs() > 0.1) & ((y - 0.5).abs() > 0.1)
    expect = torch.where(
        (y > 0.5)[:, None],
        torch.where((x < 0.5)[:, None], torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])),
        torch.where((x < 0.5)[:, None], torch.tensor([0, 0, 1.0]), torch.tensor([1.0, 1, 1])),
    )
    torch.testing.assert_close(rgb[inner], expect[inner], atol=1e-5, rtol=0)


def test_obj_material_without_texture_gives_its_diffuse_colour(tmp_path: Path) -> None:
    (tmp_path / "m.mtl").write_text("newmtl paint\nKd 0.2 0.4 0.6\n")
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl paint\nf 1 2 3\n"
    )
    _, rgb = sample_surface(read_mesh(tmp_path / "m.obj"), 50, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        rgb, torch.tensor([0.2, 0.4, 0.6]).expand(50, 3), atol=1 / 255, rtol=0
    )


def test_obj_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 zero\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.obj:3: cannot parse 'v 0 1 zero'"):
        read_mesh(bad)
    far = tmp_path / "far.obj"
    far.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 7\n")
    with pytest.raises(ValueError, match=r"far.obj:5: .*vertex index 7 is out of range \(1..3\)"):
        read_mesh(far)
    empty = tmp_path / "empty.obj"
    empty.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="empty.obj: no vertices found"):
        read_mesh(empty)

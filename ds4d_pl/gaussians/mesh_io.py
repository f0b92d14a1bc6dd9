"""Reading meshes and point clouds for the Gaussians' initialisation: OBJ, PLY and GLB.

The paper initialises from a mesh of the middle frame produced by an image-to-3D model
(InstantMesh, an LRM); those come as OBJ with vertex colours or as GLB with a base-colour
texture. Every reader returns a :class:`MeshData`; :func:`sample_surface` draws area-uniform
surface samples with their colours (vertex colours interpolated barycentrically, or the texture
looked up at the interpolated UV of each sample, times the material's base-colour factor).

GLB support covers what mesh exporters write: the binary container with its JSON and BIN
chunks, triangle primitives (``mode`` 4) with ``POSITION``, optional ``indices``, ``COLOR_0``
and ``TEXCOORD_0``, node transforms (``matrix`` or TRS, through the node hierarchy) and embedded
PNG/JPEG base-colour textures. Compressed (Draco, meshopt) or sparse data is refused with a
message naming the file.

Tests: ``tests/test_gaussians.py`` and ``tests/test_mesh_io.py``.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["SUPPORTED_FORMATS", "MeshData", "read_mesh", "sample_surface"]

#: File formats :func:`read_mesh` understands.
SUPPORTED_FORMATS = (".ply", ".obj", ".glb")


@dataclass
class MeshData:
    """A triangle mesh or point cloud with its colour source.

    Attributes:
        verts: ``(V, 3)`` positions.
        faces: ``(F, 3)`` triangle vertex indices, or ``None`` for a point cloud.
        colors: ``(V, 3)`` vertex colours in ``[0, 1]``, or ``None``.
        face_uvs: ``(F, 3, 2)`` texture coordinates of each triangle corner (textured meshes).
        face_texture: ``(F,)`` index into :attr:`textures` of each triangle, ``-1`` for none.
        face_factor: ``(F, 3)`` base-colour factor of each triangle's material.
        textures: ``(H, W, 3)`` textures in ``[0, 1]``.
    """

    verts: Tensor
    faces: Tensor | None = None
    colors: Tensor | None = None
    face_uvs: Tensor | None = None
    face_texture: Tensor | None = None
    face_factor: Tensor | None = None
    textures: list[Tensor] = field(default_factory=list)


# ------------------------------------------------------------------------------------ OBJ / PLY
def read_obj(path: Path) -> MeshData:
    """Vertices, optional per-vertex colours (``v x y z r g b``) and triangulated faces."""
    verts: list[list[float]] = []
    colors: list[list[float]] = []
    faces: list[list[int]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text OBJ file ({err})") from err
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            if tokens[0] == "v":
                vals = [float(t) for t in tokens[1:]]
                if len(vals) not in (3, 4, 6, 7):
                    raise ValueError(f"expected 3 or 6 numbers after 'v', got {len(vals)}")
                # "v x y z w" carries a homogeneous weight, "v x y z r g b" a colour.
                verts.append(vals[:3])
                if len(vals) >= 6:
                    colors.append(vals[3:6] if len(vals) == 6 else vals[4:7])
            elif tokens[0] == "f":
                idx = [int(t.split("/")[0]) for t in tokens[1:]]
                if len(idx) < 3:
                    raise ValueError("a face needs at least 3 vertices")
                # OBJ is 1-based; negative indices count back from the latest vertex.
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                for j in range(1, len(idx) - 1):
                    faces.append([idx[0], idx[j], idx[j + 1]])
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: cannot parse {line.strip()!r} ({err})") from err
    if not verts:
        raise ValueError(f"{path}: no vertices ('v' lines) found")
    v = torch.tensor(verts, dtype=torch.float32)
    c = None
    if colors:
        if len(colors) != len(verts):
            raise ValueError(f"{path}: only some vertices carry colours")
        c = torch.tensor(colors, dtype=torch.float32)
        if c.max() > 1.0:  # some exporters write 0..255
            c = c / 255.0
    f = None
    if faces:
        f = torch.tensor(faces, dtype=torch.long)
        if f.min() < 0 or f.max() >= len(verts):
            raise ValueError(f"{path}: face index out of range (1..{len(verts)})")
    return MeshData(v, f, c)


def read_ply(path: Path) -> MeshData:
    """Vertices, optional colours (``red/green/blue``) and triangulated faces of a PLY."""
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
    except Exception as err:  # plyfile raises several unrelated types on bad input
        raise ValueError(f"{path}: not a readable PLY file ({err})") from err
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise ValueError(f"{path}: PLY has no 'vertex' element (elements: {names})")
    vert = ply["vertex"]
    props = [p.name for p in vert.properties]
    missing = [n for n in ("x", "y", "z") if n not in props]
    if missing:
        raise ValueError(f"{path}: PLY vertex element lacks properties {missing}")
    v = torch.from_numpy(np.stack([np.asarray(vert[n], dtype=np.float32) for n in "xyz"], axis=1))
    c = None
    if all(n in props for n in ("red", "green", "blue")):
        raw = np.stack([np.asarray(vert[n]) for n in ("red", "green", "blue")], axis=1)
        scale = 255.0 if np.issubdtype(raw.dtype, np.integer) else 1.0
        c = torch.from_numpy(raw.astype(np.float32) / scale)
    f = None
    if "face" in names:
        face = ply["face"]
        fprops = [p.name for p in face.properties]
        key = next((k for k in ("vertex_indices", "vertex_index") if k in fprops), None)
        if key is None:
            raise ValueError(f"{path}: PLY face element lacks 'vertex_indices'")
        tris: list[list[int]] = []
        for poly in face[key]:
            poly = [int(i) for i in poly]
            for j in range(1, len(poly) - 1):
                tris.append([poly[0], poly[j], poly[j + 1]])
        if tris:
            f = torch.tensor(tris, dtype=torch.long)
            if f.min() < 0 or f.max() >= v.shape[0]:
                raise ValueError(f"{path}: face index out of range (0..{v.shape[0] - 1})")
    return MeshData(v, f, c)


# ------------------------------------------------------------------------------------------ GLB
_GLB_MAGIC = 0x46546C67  # b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
               5126: np.float32}  # fmt: skip
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_UNSUPPORTED_EXTENSIONS = ("KHR_draco_mesh_compression", "EXT_meshopt_compression")


def _glb_chunks(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    if len(data) < 12:
        raise ValueError(f"{path}: too short for a GLB file ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC:
        raise ValueError(f"{path}: not a binary glTF (GLB) file (bad magic)")
    if version != 2:
        raise ValueError(f"{path}: glTF version {version} is not supported (only 2)")
    if length > len(data):
        raise ValueError(f"{path}: truncated GLB ({len(data)} of {length} bytes)")
    offset, doc, binary = 12, None, b""
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + size]
        if kind == _CHUNK_JSON:
            try:
                doc = json.loads(chunk.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}: malformed GLB JSON chunk ({err})") from err
        elif kind == _CHUNK_BIN and not binary:
            binary = chunk
        offset += 8 + size
    if doc is None:
        raise ValueError(f"{path}: GLB has no JSON chunk")
    used = set(doc.get("extensionsUsed", [])) | set(doc.get("extensionsRequired", []))
    bad = sorted(used & set(_UNSUPPORTED_EXTENSIONS))
    if bad:
        raise ValueError(f"{path}: compressed glTF ({', '.join(bad)}) is not supported; export "
                         "the mesh without compression")  # fmt: skip
    return doc, binary


def _view_bytes(path: Path, doc: dict, binary: bytes, index: int) -> tuple[bytes, int | None]:
    view = doc["bufferViews"][index]
    if view.get("buffer", 0) != 0 or "uri" in doc["buffers"][view.get("buffer", 0)]:
        raise ValueError(f"{path}: buffer view {index} refers to an external buffer")
    start = view.get("byteOffset", 0)
    return binary[start : start + view["byteLength"]], view.get("byteStride")


def _accessor(path: Path, doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    if "sparse" in acc:
        raise ValueError(f"{path}: sparse accessor {index} is not supported")
    if "bufferView" not in acc:
        raise ValueError(f"{path}: accessor {index} has no buffer view")
    dtype = np.dtype(_COMPONENTS[acc["componentType"]]).newbyteorder("<")
    width = _WIDTH[acc["type"]]
    raw, stride = _view_bytes(path, doc, binary, acc["bufferView"])
    count, offset = acc["count"], acc.get("byteOffset", 0)
    item = dtype.itemsize * width
    if stride and stride != item:
        rows = np.frombuffer(raw, np.uint8, count=stride * (count - 1) + item, offset=offset)
        rows = np.lib.stride_tricks.as_strided(rows, (count, item), (stride, 1))
        out = np.frombuffer(rows.copy().tobytes(), dtype).reshape(count, width)
    else:
        out = np.frombuffer(raw, dtype, count=count * width, offset=offset).reshape(count, width)
    if acc.get("normalized") and np.issubdtype(dtype, np.integer):
        return out.astype(np.float32) / np.iinfo(dtype).max
    return out.astype(np.float32 if dtype.kind == "f" else np.int64)


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    t = np.asarray(node.get("translation", [0, 0, 0]), dtype=np.float64)
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m = np.eye(4)
    m[:3, :3] = r * np.asarray(node.get("scale", [1, 1, 1]), dtype=np.float64)
    m[:3, 3] = t
    return m


def _texture(path: Path, doc: dict, binary: bytes, index: int) -> Tensor:
    from PIL import Image

    source = doc["textures"][index].get("source")
    image = doc["images"][source] if source is not None else None
    if image is None or "bufferView" not in image:
        raise ValueError(f"{path}: texture {index} is not embedded in the GLB")
    raw, _ = _view_bytes(path, doc, binary, image["bufferView"])
    try:
        with Image.open(io.BytesIO(raw)) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as err:
        raise ValueError(f"{path}: texture {index} cannot be decoded ({err})") from err
    return torch.from_numpy(rgb.copy())


def read_glb(path: Path) -> MeshData:
    """Triangle meshes of a GLB's default scene, in world coordinates, merged into one."""
    doc, binary = _glb_chunks(path)
    meshes, nodes = doc.get("meshes", []), doc.get("nodes", [])
    scenes = doc.get("scenes", [])
    if scenes:
        roots = scenes[doc.get("scene", 0)].get("nodes", [])
    else:
        roots = [i for i, n in enumerate(nodes) if "mesh" in n]
    verts, faces, colors, uvs, tex_ids, factors = [], [], [], [], [], []
    textures: dict[int, int] = {}
    texture_list: list[Tensor] = []
    any_color = False
    stack = [(i, np.eye(4)) for i in roots]
    while stack:
        index, parent = stack.pop()
        node = nodes[index]
        world = parent @ _node_matrix(node)
        stack += [(c, world) for c in node.get("children", [])]
        if "mesh" not in node:
            continue
        for prim in meshes[node["mesh"]].get("primitives", []):
            if prim.get("mode", 4) != 4:
                continue  # points and lines carry no surface to sample
            attrs = prim.get("attributes", {})
            if "POSITION" not in attrs:
                raise ValueError(f"{path}: a mesh primitive has no POSITION attribute")
            pos = _accessor(path, doc, binary, attrs["POSITION"])[:, :3].astype(np.float64)
            pos = pos @ world[:3, :3].T + world[:3, 3]
            n = len(pos)
            if "indices" in prim:
                idx = _accessor(path, doc, binary, prim["indices"]).reshape(-1, 3)
            else:
                idx = np.arange(n).reshape(-1, 3)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"{path}: triangle index out of range (0..{n - 1})")
            base = sum(len(v) for v in verts)
            verts.append(pos.astype(np.float32))
            faces.append(idx + base)
            col = np.ones((n, 3), np.float32)
            if "COLOR_0" in attrs:
                col = _accessor(path, doc, binary, attrs["COLOR_0"])[:, :3]
                any_color = True
            colors.append(col)
            material = doc.get("materials", [{}])[prim["material"]] if "material" in prim else {}
            pbr = material.get("pbrMetallicRoughness", {})
            factors.append(np.tile(np.asarray(pbr.get("baseColorFactor", [1, 1, 1, 1]))[:3],
                                   (len(idx), 1)))  # fmt: skip
            tex = pbr.get("baseColorTexture")
            if tex is not None and f"TEXCOORD_{tex.get('texCoord', 0)}" in attrs:
                uv = _accessor(path, doc, binary, attrs[f"TEXCOORD_{tex.get('texCoord', 0)}"])
                if tex["index"] not in textures:
                    textures[tex["index"]] = len(texture_list)
                    texture_list.append(_texture(path, doc, binary, tex["index"]))
                uvs.append(uv[idx])
                tex_ids.append(np.full(len(idx), textures[tex["index"]]))
            else:
                uvs.append(np.zeros((len(idx), 3, 2), np.float32))
                tex_ids.append(np.full(len(idx), -1))
    if not verts:
        raise ValueError(f"{path}: no triangle mesh in the GLB's scene")
    faces_t = torch.from_numpy(np.concatenate(faces).astype(np.int64))
    factor = torch.from_numpy(np.concatenate(factors).astype(np.float32))
    textured = bool(texture_list)
    return MeshData(
        verts=torch.from_numpy(np.concatenate(verts)),
        faces=faces_t,
        colors=torch.from_numpy(np.concatenate(colors)) if any_color or not textured else None,
        face_uvs=torch.from_numpy(np.concatenate(uvs).astype(np.float32)) if textured else None,
        face_texture=torch.from_numpy(np.concatenate(tex_ids)) if textured else None,
        face_factor=factor,
        textures=texture_list,
    )


def read_mesh(path: str | Path) -> MeshData:
    """Read an OBJ, PLY or GLB file (format by extension, checked to exist)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise NotImplementedError(
            f"{path}: format {suffix or '(none)'!r} is not supported; "
            f"use one of {', '.join(SUPPORTED_FORMATS)} (point cloud or triangle mesh)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"Initial point cloud / mesh not found: {path}")
    reader = {".ply": read_ply, ".obj": read_obj, ".glb": read_glb}[suffix]
    mesh = reader(path)
    if not torch.isfinite(mesh.verts).all():
        raise ValueError(f"{path}: vertex positions contain NaN or inf")
    return mesh


# ------------------------------------------------------------------------------------- sampling
def _bilinear(texture: Tensor, uv: Tensor) -> Tensor:
    """Texture colours at glTF UVs (origin top-left).

    UVs outside ``[0, 1]`` repeat, but the filter clamps at the texture's edges: generated
    meshes use texture atlases, where blending across the border would mix unrelated charts.
    """
    h, w, _ = texture.shape
    x = (uv[:, 0] % 1.0) * w - 0.5
    y = (uv[:, 1] % 1.0) * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = (x0 + 1).clamp(0, w - 1).long(), (y0 + 1).clamp(0, h - 1).long()
    x0, y0 = x0.clamp(0, w - 1).long(), y0.clamp(0, h - 1).long()
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def sample_surface(
    mesh: MeshData, num_samples: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor | None]:
    """Area-uniform surface samples of a mesh with their colours.

    Args:
        mesh: A triangle mesh (``faces`` set).
        num_samples: Points to draw.
        generator: Random generator for reproducible samples.

    Returns:
        ``(num_samples, 3)`` points and colours (``None`` when the mesh has no colour source).
    """
    if mesh.faces is None:
        raise ValueError("sample_surface needs a triangle mesh")
    tri = mesh.verts[mesh.faces]  # (F, 3, 3)
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1) / 2
    if not torch.isfinite(area).all() or area.sum() <= 0:
        raise ValueError("the mesh has zero total area")
    face_idx = torch.multinomial(area, num_samples, replacement=True, generator=generator)
    u = torch.rand(num_samples, generator=generator)
    w = torch.rand(num_samples, generator=generator)
    # Reflect samples from the far half of the unit square back into the triangle.
    flip = u + w > 1
    u = torch.where(flip, 1 - u, u)
    w = torch.where(flip, 1 - w, w)
    bary = torch.stack([1 - u - w, u, w], dim=1)[:, :, None]  # (S, 3, 1)
    points = (bary * tri[face_idx]).sum(dim=1)
    colors = None
    if mesh.colors is not None:
        colors = (bary * mesh.colors[mesh.faces][face_idx]).sum(dim=1)
    if mesh.face_uvs is not None and mesh.face_texture is not None:
        uv = (bary * mesh.face_uvs[face_idx]).sum(dim=1)
        tex_id = mesh.face_texture[face_idx]
        textured = torch.ones(num_samples, 3) if colors is None else colors.clone()
        for k, texture in enumerate(mesh.textures):
            sel = tex_id == k
            if sel.any():
                textured[sel] = textured[sel] * _bilinear(texture, uv[sel])
        colors = textured
    if colors is not None and mesh.face_factor is not None:
        colors = colors * mesh.face_factor[face_idx]
    return points, None if colors is None else colors.clamp(0.0, 1.0)

"""Reading meshes and point clouds for the Gaussians' initialisation: OBJ, PLY and GLB.

The paper initialises from a mesh of the middle frame produced by an image-to-3D model
(InstantMesh, an LRM); those come as OBJ with vertex colours or a textured material, or as GLB
with a base-colour texture. Every reader returns a :class:`MeshData`; :func:`sample_surface` draws
area-uniform surface samples with their colours (vertex colours interpolated barycentrically,
the texture looked up at the interpolated UV of each sample, times the material's base colour).

OBJ and GLB are parsed by ``trimesh`` (node transforms, multi-primitive meshes, MTL materials and
their textures). PLY stays with ``plyfile``, which the 3DGS exporter needs anyway and which keeps
float colours exact. Around trimesh, this module adds what a user needs when a file is wrong:

* trimesh reports a broken file as a bare ``IndexError`` / ``JSONDecodeError`` or not at all, so
  every failure is re-raised as one ``ValueError`` naming the file (and, for OBJ, the line);
* a GLB's header is checked first (too short, bad magic, truncated), and geometry compression
  trimesh cannot decode here is refused: without its decoder trimesh would return all-zero
  vertices with only a log warning;
* a base-colour texture that does not decode is an error, not a silently uncoloured mesh.

Colour conventions follow trimesh's own ``to_color``: a glTF material's texture is multiplied by
its ``baseColorFactor`` (white by default); an MTL material with ``map_Kd`` uses the texture alone
(trimesh fills a missing ``Kd`` with grey, which must not darken the texture), and one without a
texture uses ``Kd``. trimesh stores material and vertex colours as 8-bit, so those are exact to
1/255. OBJ vertex colours written as 0..255 (outside the format) are clipped to 1 by trimesh.

Tests: ``tests/test_gaussians.py`` and ``tests/test_mesh_io.py``.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # trimesh is imported when a mesh is read, not with the package
    import trimesh

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
        face_uvs: ``(F, 3, 2)`` texture coordinates of each triangle corner (textured meshes),
            with the origin at the image's top-left corner (``v`` grows downwards, as in glTF).
        face_texture: ``(F,)`` index into :attr:`textures` of each triangle, ``-1`` for none.
        face_factor: ``(F, 3)`` base colour of each triangle's material (a multiplier).
        textures: ``(H, W, 3)`` textures in ``[0, 1]``.
    """

    verts: Tensor
    faces: Tensor | None = None
    colors: Tensor | None = None
    face_uvs: Tensor | None = None
    face_texture: Tensor | None = None
    face_factor: Tensor | None = None
    textures: list[Tensor] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ PLY
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


# ------------------------------------------------------------------------------------------ OBJ
def _obj_problem(path: Path) -> str | None:
    """The first line of an OBJ that cannot be parsed, as ``path:line: why``, or ``None``.

    trimesh parses OBJ numbers in bulk and so cannot say where a file is broken; this scan runs
    only after trimesh failed, to point the user at the line.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError as err:
        return f"{path}: not a text OBJ file ({err})"
    num_verts = sum(1 for line in lines if line.split()[:1] == ["v"])
    for lineno, line in enumerate(lines, start=1):
        tokens = line.split()
        try:
            if tokens[:1] in (["v"], ["vt"], ["vn"]):
                [float(t) for t in tokens[1:]]
            elif tokens[:1] == ["f"]:
                for t in tokens[1:]:
                    i = int(t.split("/")[0])
                    if not (1 <= i <= num_verts or -num_verts <= i <= -1):
                        raise ValueError(f"vertex index {i} is out of range (1..{num_verts})")
        except ValueError as err:
            return f"{path}:{lineno}: cannot parse {line.strip()!r} ({err})"
    return None


# ------------------------------------------------------------------------------------------ GLB
_GLB_MAGIC = 0x46546C67  # b"glTF"
_CHUNK_JSON = 0x4E4F534A
# Geometry compression: the Python package trimesh needs to decode it (None: no decoder).
_COMPRESSION_DECODERS = {"KHR_draco_mesh_compression": "DracoPy", "EXT_meshopt_compression": None}


def _glb_document(path: Path) -> dict:
    """The JSON document of a GLB, after checking the container's header."""
    data = path.read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short for a GLB file ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC:
        raise ValueError(f"{path}: not a binary glTF (GLB) file (bad magic)")
    if version != 2:
        raise ValueError(f"{path}: glTF version {version} is not supported (only 2)")
    if length > len(data):
        raise ValueError(f"{path}: truncated GLB ({len(data)} of {length} bytes)")
    size, kind = struct.unpack_from("<II", data, 12)
    if kind != _CHUNK_JSON or 20 + size > length:
        raise ValueError(f"{path}: GLB does not start with a complete JSON chunk")
    try:
        doc = json.loads(data[20 : 20 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed GLB JSON chunk ({err})") from err
    used = set(doc.get("extensionsUsed", [])) | set(doc.get("extensionsRequired", []))
    for ext in sorted(used & set(_COMPRESSION_DECODERS)):
        decoder = _COMPRESSION_DECODERS[ext]
        if decoder is None or importlib.util.find_spec(decoder) is None:
            hint = f"install {decoder} or export" if decoder else "export"
            raise ValueError(
                f"{path}: compressed glTF ({ext}) cannot be decoded here; {hint} the mesh "
                "without compression"
            )
    return doc


def _base_color_images(doc: dict) -> set[int]:
    """Image indices used as base-colour textures by the GLB's triangle primitives."""
    materials, textures = doc.get("materials", []), doc.get("textures", [])
    images = set()
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if prim.get("mode", 4) != 4 or "material" not in prim:
                continue
            pbr = materials[prim["material"]].get("pbrMetallicRoughness", {})
            tex = pbr.get("baseColorTexture")
            # trimesh reads TEXCOORD_0 only; a texture on another set is not looked up.
            if tex is not None and "TEXCOORD_0" in prim.get("attributes", {}):
                source = textures[tex["index"]].get("source")
                if source is not None:
                    images.add(source)
    return images


# ---------------------------------------------------------------------------- trimesh → MeshData
@dataclass
class _Part:
    """One geometry of a trimesh scene, in world coordinates, with its colour sources."""

    verts: np.ndarray
    faces: np.ndarray | None
    colors: np.ndarray | None = None
    face_uvs: np.ndarray | None = None
    texture: object | None = None  # a PIL image
    factor: np.ndarray | None = None  # (3,) material base colour


def _part(geom: trimesh.parent.Geometry, transform: np.ndarray) -> _Part | None:
    import trimesh

    to_float = trimesh.visual.color.to_float
    verts = np.asarray(geom.vertices, np.float64) @ transform[:3, :3].T + transform[:3, 3]
    if isinstance(geom, trimesh.PointCloud):
        colors = np.asarray(geom.colors)
        return _Part(verts, None, to_float(colors)[:, :3] if len(colors) else None)
    if not isinstance(geom, trimesh.Trimesh):
        return None  # lines and curves carry no surface to sample
    faces = np.asarray(geom.faces, np.int64)
    if len(faces) == 0:
        return _Part(verts, None)
    part = _Part(verts, faces)
    visual = geom.visual
    if isinstance(visual, trimesh.visual.ColorVisuals):
        if visual.kind == "vertex":
            part.colors = to_float(visual.vertex_colors)[:, :3]
        return part
    material = visual.material
    if isinstance(material, trimesh.visual.material.SimpleMaterial):
        part.texture = material.image
        if material.image is None:
            part.factor = to_float(material.diffuse)[:3]
    elif isinstance(material, trimesh.visual.material.PBRMaterial):
        part.texture = material.baseColorTexture
        factor = material.baseColorFactor  # glTF's default is white
        part.factor = np.ones(3) if factor is None else to_float(factor)[:3]
    colors = visual.vertex_attributes.get("color")
    if colors is not None:
        part.colors = to_float(np.asarray(colors))[:, :3]
    if part.texture is not None and visual.uv is not None:
        uv = np.asarray(visual.uv, np.float64)[faces]
        # trimesh puts the UV origin bottom-left (OpenGL); the lookup indexes image rows.
        part.face_uvs = np.stack([uv[..., 0], 1.0 - uv[..., 1]], axis=-1)
    else:
        part.texture = None
    return part


def _texture_tensor(path: Path, image: object) -> Tensor:
    try:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as err:  # PIL decodes lazily, so a broken image fails only here
        raise ValueError(f"{path}: a base-colour texture cannot be decoded ({err})") from err
    return torch.from_numpy(rgb.copy())


def _merge(path: Path, parts: list[_Part]) -> MeshData:
    """One :class:`MeshData` from a scene's parts (points only when there is no surface)."""
    surfaces = [p for p in parts if p.faces is not None]
    if not surfaces:
        colored = all(p.colors is not None for p in parts)
        verts = np.concatenate([p.verts for p in parts]).astype(np.float32)
        colors = np.concatenate([p.colors for p in parts]).astype(np.float32) if colored else None
        return MeshData(
            torch.from_numpy(verts), colors=None if colors is None else torch.from_numpy(colors)
        )
    verts, faces, colors, uvs, tex_ids, factors = [], [], [], [], [], []
    textures: dict[int, int] = {}
    texture_list: list[Tensor] = []
    base = 0
    for p in surfaces:
        n, f = len(p.verts), len(p.faces)
        verts.append(p.verts)
        faces.append(p.faces + base)
        base += n
        colors.append(p.colors if p.colors is not None else np.ones((n, 3)))
        factors.append(np.tile(p.factor if p.factor is not None else np.ones(3), (f, 1)))
        if p.texture is not None:
            if id(p.texture) not in textures:
                textures[id(p.texture)] = len(texture_list)
                texture_list.append(_texture_tensor(path, p.texture))
            uvs.append(p.face_uvs)
            tex_ids.append(np.full(f, textures[id(p.texture)]))
        else:
            uvs.append(np.zeros((f, 3, 2)))
            tex_ids.append(np.full(f, -1))
    any_color = any(p.colors is not None for p in surfaces)
    any_factor = any(p.factor is not None for p in surfaces)
    textured = bool(texture_list)

    def tensor(arrays: list[np.ndarray], dtype: type) -> Tensor:
        return torch.from_numpy(np.concatenate(arrays).astype(dtype))

    return MeshData(
        verts=tensor(verts, np.float32),
        faces=tensor(faces, np.int64),
        colors=tensor(colors, np.float32) if any_color else None,
        face_uvs=tensor(uvs, np.float32) if textured else None,
        face_texture=tensor(tex_ids, np.int64) if textured else None,
        face_factor=tensor(factors, np.float32) if any_factor or textured else None,
        textures=texture_list,
    )


def read_trimesh(path: Path) -> MeshData:
    """Every geometry of an OBJ or GLB scene, in world coordinates, merged into one mesh.

    Meshes win over points: a file with any triangles gives a mesh and its loose points and
    lines are left out; a file with points only gives a point cloud.
    """
    import trimesh

    kind = path.suffix.lower()[1:].upper()
    doc = _glb_document(path) if kind == "GLB" else None
    try:
        scene = trimesh.load_scene(path, file_type=kind.lower(), process=False)
    except Exception as err:  # trimesh raises whatever its parser hit (IndexError, KeyError...)
        where = _obj_problem(path) if kind == "OBJ" else None
        if where is not None:
            raise ValueError(where) from err
        raise ValueError(
            f"{path}: not a readable {kind} file ({type(err).__name__}: {err})"
        ) from err
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        part = _part(scene.geometry[name], np.asarray(transform, np.float64))
        if part is not None and len(part.verts):
            parts.append(part)
    if not parts:
        what = "no triangle mesh or points in the GLB's scene" if doc else "no vertices found"
        raise ValueError(f"{path}: {what}")
    if doc is not None:
        expected = len(_base_color_images(doc))
        decoded = len({id(p.texture) for p in parts if p.texture is not None})
        if decoded < expected:
            raise ValueError(
                f"{path}: {expected - decoded} of {expected} base-colour textures could not be "
                "decoded (embed them as PNG or JPEG)"
            )
    return _merge(path, parts)


def read_mesh(path: str | Path) -> MeshData:
    """Read an OBJ, PLY or GLB file (format by extension, checked to exist).

    Raises:
        NotImplementedError: The extension is not one of :data:`SUPPORTED_FORMATS`.
        FileNotFoundError: The file does not exist.
        ValueError: The content cannot be used (the message names the file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise NotImplementedError(
            f"{path}: format {suffix or '(none)'!r} is not supported; "
            f"use one of {', '.join(SUPPORTED_FORMATS)} (point cloud or triangle mesh)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"Initial point cloud / mesh not found: {path}")
    mesh = read_ply(path) if suffix == ".ply" else read_trimesh(path)
    if not torch.isfinite(mesh.verts).all():
        raise ValueError(f"{path}: vertex positions contain NaN or inf")
    return mesh


# ------------------------------------------------------------------------------------- sampling
def _bilinear(texture: Tensor, uv: Tensor) -> Tensor:
    """Texture colours at UVs with the origin at the top-left corner.

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
    if mesh.face_factor is not None:
        # A material's base colour alone (no vertex colours, no texture) is a colour source too.
        factor = mesh.face_factor[face_idx]
        colors = factor if colors is None else colors * factor
    return points, None if colors is None else colors.clamp(0.0, 1.0)

"""meshrec.io.render: the z-buffer rasteriser against hand-computed pixels and analytic depths."""

from __future__ import annotations

import numpy as np
import pytest

from meshrec.io.render import Mesh, rasterize, render_meshes, vertex_normals

IDENTITY = np.eye(3)  # K = I: a camera-frame point (u z, v z, z) lands on pixel (u, v)


def _on_pixels(corners_uv, depths):
    """Camera-frame corners whose projection with K = I is ``corners_uv`` at ``depths``."""
    uv = np.asarray(corners_uv, dtype=np.float64)
    z = np.asarray(depths, dtype=np.float64)
    return np.column_stack([uv * z[:, None], z])


def _ray_depth(corners, u, v):
    """z where the pixel ray (u, v, 1) t meets the plane of the triangle ``corners`` (3, 3)."""
    normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
    return float(normal @ corners[0]) / float(normal @ np.array([u, v, 1.0]))


def test_a_triangle_covers_the_pixel_centres_inside_it_edges_included():
    vertices = _on_pixels([(1.5, 1.5), (8.5, 1.5), (1.5, 8.5)], [1.0, 1.0, 1.0])
    fragments = rasterize(vertices, [[0, 1, 2]], IDENTITY, (12, 10))
    # Centres (x, y) with x >= 2, y >= 2 and x + y <= 10 (the hypotenuse passes through x + y = 10).
    expected = np.zeros((10, 12), dtype=bool)
    for y in range(2, 9):
        expected[y, 2:10 - y + 1] = True
    assert expected.sum() == 28
    np.testing.assert_array_equal(fragments.mask, expected)
    assert (fragments.face[expected] == 0).all() and (fragments.face[~expected] == -1).all()
    np.testing.assert_allclose(fragments.depth[expected], 1.0)
    assert np.isinf(fragments.depth[~expected]).all()
    np.testing.assert_allclose(fragments.barycentric[expected].sum(axis=1), 1.0)
    # Barycentric weights reproduce the pixel: sum_i w_i corner_i = (x, y).
    ys, xs = np.nonzero(expected)
    uv = fragments.barycentric[ys, xs] @ vertices[:, :2]
    np.testing.assert_allclose(uv, np.column_stack([xs, ys]), atol=1e-9)


def test_depth_is_perspective_correct_on_a_slanted_triangle():
    corners = _on_pixels([(2.0, 2.0), (40.0, 5.0), (10.0, 30.0)], [1.0, 4.0, 2.0])
    K = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fragments = rasterize(corners, [[0, 1, 2]], K, (48, 32))
    ys, xs = np.nonzero(fragments.mask)
    assert len(ys) > 300
    expected = [_ray_depth(corners, u, v) for u, v in zip(xs, ys)]
    np.testing.assert_allclose(fragments.depth[ys, xs], expected, rtol=1e-12)
    # The barycentric weights are the 3D ones: they give back the surface point on the pixel's ray.
    points = fragments.barycentric[ys, xs] @ corners
    np.testing.assert_allclose(points[:, :2] / points[:, 2:], np.column_stack([xs, ys]), atol=1e-9)


def test_the_nearer_of_two_overlapping_triangles_wins_whatever_their_order():
    near = _on_pixels([(2, 2), (14, 2), (2, 14)], [2.0, 2.0, 2.0])
    far = _on_pixels([(6, 6), (18, 6), (6, 18)], [3.0, 3.0, 3.0])
    for vertices, near_id in ((np.vstack([near, far]), 0), (np.vstack([far, near]), 1)):
        fragments = rasterize(vertices, [[0, 1, 2], [3, 4, 5]], IDENTITY, (20, 20))
        assert fragments.face[8, 8] == near_id and fragments.depth[8, 8] == pytest.approx(2.0)  # both cover it
        assert fragments.face[16, 7] == 1 - near_id and fragments.depth[16, 7] == pytest.approx(3.0)  # far only
        assert fragments.face[3, 3] == near_id and fragments.face[1, 1] == -1


def test_crossing_triangles_each_win_where_they_are_nearer():
    # Two triangles covering the same pixels and crossing each other along x = 10.
    a = _on_pixels([(0, 0), (24, 0), (0, 24)], [1.0, 3.0, 1.0])  # z grows with x
    b = _on_pixels([(0, 0), (24, 0), (0, 24)], [3.0, 1.0, 3.0])  # z shrinks with x
    fragments = rasterize(np.vstack([a, b]), [[0, 1, 2], [3, 4, 5]], IDENTITY, (24, 24))
    ys, xs = np.nonzero(fragments.mask)
    depth_a = np.array([_ray_depth(a, u, v) for u, v in zip(xs, ys)])
    depth_b = np.array([_ray_depth(b, u, v) for u, v in zip(xs, ys)])
    clear = np.abs(depth_a - depth_b) > 1e-9
    np.testing.assert_array_equal(fragments.face[ys, xs][clear], np.where(depth_a < depth_b, 0, 1)[clear])
    np.testing.assert_allclose(fragments.depth[ys, xs], np.minimum(depth_a, depth_b), rtol=1e-12)
    assert (fragments.face[ys, xs] == 0).any() and (fragments.face[ys, xs] == 1).any()


def _square(centre_z, half, uv_centre=(20.0, 20.0)):
    """Two triangles facing the camera, a square of ``half`` pixels around ``uv_centre``."""
    cu, cv = uv_centre
    uv = [(cu - half, cv - half), (cu + half, cv - half), (cu + half, cv + half), (cu - half, cv + half)]
    return _on_pixels(uv, [centre_z] * 4), np.array([[0, 1, 2], [0, 2, 3]])


def test_a_nearer_mesh_hides_a_farther_one_in_either_order():
    front, front_faces = _square(2.0, 5)
    back, back_faces = _square(4.0, 12)
    red = Mesh(front, front_faces, (255, 0, 0))
    blue = Mesh(back, back_faces, (0, 0, 255))
    light = (0.0, 0.0, -1.0)  # along the squares' normals: colours come out unshaded
    pictures = [render_meshes(order, IDENTITY, (40, 40), light=light) for order in ([red, blue], [blue, red])]
    np.testing.assert_array_equal(pictures[0], pictures[1])
    picture = pictures[0]
    assert picture.shape == (40, 40, 3) and picture.dtype == np.uint8
    assert tuple(picture[20, 20]) == (255, 0, 0)  # front square
    assert tuple(picture[20, 30]) == (0, 0, 255)  # back square only
    assert tuple(picture[2, 2]) == (255, 255, 255)  # background
    # Semi-transparent in front: blended over what is behind; behind: hidden by the opaque front.
    ghost = render_meshes([blue, Mesh(front, front_faces, (255, 0, 0), opacity=0.25)], IDENTITY, (40, 40), light=light)
    np.testing.assert_array_equal(ghost[20, 20], np.rint([0.25 * 255, 0, 0.75 * 255]).astype(np.uint8))
    hidden = render_meshes([red, Mesh(back, back_faces, (0, 0, 255), opacity=0.25)], IDENTITY, (40, 40), light=light)
    assert tuple(hidden[20, 20]) == (255, 0, 0)


def test_background_image_outlines_and_shading():
    photo = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    vertices, faces = _square(2.0, 6)
    picture = render_meshes([Mesh(vertices, faces, (200, 100, 50), outline=(0, 255, 0), outline_width=1)], IDENTITY,
                            (40, 40), background=photo, light=(0.0, 0.0, -1.0))
    np.testing.assert_array_equal(picture[:10], photo[:10])  # untouched outside the mesh
    assert tuple(picture[20, 20]) == (200, 100, 50)
    assert tuple(picture[14, 20]) == (0, 255, 0) and tuple(picture[20, 26]) == (0, 255, 0)  # the square's border
    assert tuple(picture[15, 20]) == (200, 100, 50)
    # A light at 60 degrees to the normal: ambient + (1 - ambient) cos 60.
    tilted = render_meshes([Mesh(vertices, faces, (200, 100, 50))], IDENTITY, (40, 40),
                           light=(0.0, np.sin(np.pi / 3), -0.5), ambient=0.2)
    np.testing.assert_array_equal(tilted[20, 20], np.rint(np.array([200, 100, 50]) * (0.2 + 0.8 * 0.5)))


def test_vertex_normals_of_a_cube_point_outwards():
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))])
    normals = vertex_normals(signs, faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    assert (np.sum(normals * signs, axis=1) > 0.9 * np.sqrt(3)).all()


def test_empty_input_and_meshes_behind_the_camera_draw_nothing():
    fragments = rasterize(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), IDENTITY, (8, 6))
    assert fragments.depth.shape == (6, 8) and not fragments.mask.any() and np.isinf(fragments.depth).all()
    assert (render_meshes([], IDENTITY, (8, 6)) == 255).all()
    assert (render_meshes([], IDENTITY, (8, 6), background=(10, 20, 30)) == [10, 20, 30]).all()
    vertices, faces = _square(-2.0, 3, (4.0, 3.0))
    assert not rasterize(vertices, faces, IDENTITY, (8, 6)).mask.any()
    vertices, faces = _square(2.0, 3, (400.0, 300.0))  # off the image
    assert not rasterize(vertices, faces, IDENTITY, (8, 6)).mask.any()


@pytest.mark.parametrize("change, message", [
    (dict(vertices=np.zeros((4, 2))), "vertices must be"),
    (dict(faces=np.array([[0, 1]])), "faces must be"),
    (dict(faces=np.array([[0, 1, 7]])), "faces index vertices"),
    (dict(faces=np.array([[0.0, 1.0, 2.0]])), "faces must be integers"),
    (dict(vertices=np.full((4, 3), np.nan)), "NaN"),
    (dict(K=np.eye(2)), "K must be"),
    (dict(image_size=(0, 10)), "image_size"),
    (dict(image_size=10), "image_size"),
    (dict(color=(1, 2)), "color must be"),
    (dict(opacity=1.5), "opacity"),
    (dict(background=np.zeros((5, 5, 3))), "background"),
    (dict(shading="phong"), "shading"),
])
def test_bad_input_is_refused_with_a_message(change, message):
    vertices, faces = _square(2.0, 3, (5.0, 5.0))
    args = dict(vertices=vertices, faces=faces, color=(255, 0, 0), opacity=1.0, shading="flat", K=IDENTITY,
                image_size=(10, 10), background=None)
    args.update(change)
    mesh = Mesh(args["vertices"], args["faces"], args["color"], args["opacity"], shading=args["shading"])
    with pytest.raises(ValueError, match=message):
        render_meshes([mesh], args["K"], args["image_size"], background=args["background"])


def test_per_vertex_and_per_face_colours():
    vertices, faces = _square(2.0, 6)
    colors = np.array([[255, 0, 0], [255, 0, 0], [0, 0, 255], [0, 0, 255]], dtype=np.float64)
    picture = render_meshes([Mesh(vertices, faces, colors)], IDENTITY, (40, 40), light=(0, 0, -1))
    assert picture[15, 20, 0] > picture[25, 20, 0] and picture[15, 20, 2] < picture[25, 20, 2]  # top red, bottom blue
    by_face = render_meshes([Mesh(vertices, faces, face_colors=[(255, 0, 0), (0, 255, 0)])], IDENTITY, (40, 40),
                            light=(0, 0, -1))
    assert tuple(by_face[16, 23]) == (255, 0, 0) and tuple(by_face[23, 16]) == (0, 255, 0)
    with pytest.raises(ValueError, match="face_colors"):
        render_meshes([Mesh(vertices, faces, face_colors=np.zeros((3, 3)))], IDENTITY, (40, 40))


def test_results_do_not_depend_on_how_the_work_is_batched(monkeypatch):
    import meshrec.io.render as render

    rng = np.random.default_rng(3)
    uv = rng.uniform(-5, 45, (60, 3, 2))  # overlapping triangles of all sizes, some off the image
    z = rng.uniform(1.0, 5.0, (60, 3))
    vertices = np.concatenate([np.dstack([uv * z[..., None], z[..., None]]).reshape(-1, 3)])
    faces = np.arange(180).reshape(60, 3)
    reference = rasterize(vertices, faces, IDENTITY, (40, 30))
    monkeypatch.setattr(render, "_CHUNK_ROWS", 7)
    monkeypatch.setattr(render, "_CHUNK_FRAGMENTS", 50)
    batched = rasterize(vertices, faces, IDENTITY, (40, 30))
    np.testing.assert_array_equal(batched.depth, reference.depth)
    np.testing.assert_array_equal(batched.face, reference.face)
    assert reference.mask.sum() > 800
    # And every covered pixel shows the nearest of the faces whose plane the pixel ray meets inside.
    ys, xs = np.nonzero(reference.mask)
    for y, x in list(zip(ys, xs))[::37]:
        depths = []
        for face in faces:
            corners = vertices[face]
            w = np.linalg.solve(corners.T, np.array([x, y, 1.0]))  # ray point t (x, y, 1) = corners^T w
            if (w >= -1e-12).all():
                depths.append(1.0 / w.sum())
        assert reference.depth[y, x] == pytest.approx(min(depths), rel=1e-9)

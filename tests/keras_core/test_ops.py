"""cf.ops against closed forms."""

import numpy as np
import pytest
from conftest import to_numpy
from keras import ops as K

import customfit as cf

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype="float32")


def test_grad_of_polynomial():
    # f(x) = sum(x^3 + 2x) -> 3x^2 + 2
    g = cf.ops.grad(lambda x: K.sum(x**3 + 2.0 * x))(K.convert_to_tensor(X))
    np.testing.assert_allclose(to_numpy(g), 3 * X**2 + 2, rtol=1e-6)


def test_grad_with_respect_to_second_argument():
    # f(a, b) = sum(a * b^2): d/db = 2ab
    a, b = K.convert_to_tensor(X), K.convert_to_tensor(X + 1.0)
    ga, gb = cf.ops.grad(lambda a, b: K.sum(a * b**2), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(to_numpy(ga), (X + 1) ** 2, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(gb), 2 * X * (X + 1), rtol=1e-6)


def test_value_and_grad_with_aux():
    def f(x):
        return K.sum(K.sin(x)), {"doubled": 2.0 * x}

    (value, aux), g = cf.ops.value_and_grad(f, has_aux=True)(K.convert_to_tensor(X))
    np.testing.assert_allclose(float(to_numpy(value)), np.sin(X).sum(), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(aux["doubled"]), 2 * X, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(g), np.cos(X), rtol=1e-6)


def test_nested_gradient_of_squared_gradient_norm():
    # f = sum(x^4) -> grad = 4x^3; h = |grad|^2 = 16 sum x^6 -> dh/dx = 96 x^5
    def grad_norm_sq(x):
        g = cf.ops.grad(lambda y: K.sum(y**4))(x)
        return K.sum(g**2)

    h = cf.ops.grad(grad_norm_sq)(K.convert_to_tensor(X))
    np.testing.assert_allclose(to_numpy(h), 96 * X**5, rtol=1e-5)


def test_divergence_of_linear_field_is_trace():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 3)).astype("float32")
    x = rng.normal(size=(5, 3)).astype("float32")
    At = K.convert_to_tensor(A)
    div = cf.ops.divergence(lambda v: K.matmul(v, K.transpose(At)), K.convert_to_tensor(x))
    np.testing.assert_allclose(to_numpy(div), np.full(5, np.trace(A)), rtol=1e-5)


def test_divergence_of_tanh_is_sum_of_one_minus_tanh_squared():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 6)).astype("float32")
    div = cf.ops.divergence(K.tanh, K.convert_to_tensor(x))
    np.testing.assert_allclose(to_numpy(div), (1 - np.tanh(x) ** 2).sum(axis=1), rtol=1e-5)


def test_hutchinson_mean_approaches_exact():
    rng = np.random.default_rng(3)
    A = K.convert_to_tensor(rng.normal(size=(4, 4)).astype("float32"))
    x = rng.normal(size=(1, 4)).astype("float32")
    # A non-linear field, so the estimate's variance is not zero.
    field = lambda v: K.tanh(K.matmul(v, A))  # noqa: E731
    exact = float(to_numpy(cf.ops.divergence(field, K.convert_to_tensor(x)))[0])
    many = np.repeat(x, 4000, axis=0)
    estimates = to_numpy(cf.ops.divergence(field, K.convert_to_tensor(many), "hutchinson", seed=7))
    stderr = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * stderr + 1e-6, (estimates.mean(), exact, stderr)
    assert estimates.std() > 0.01  # it is an estimate, not the exact value in disguise


def test_divergence_rejects_a_field_that_changes_shape():
    with pytest.raises(
        ValueError,
        match=r"divergence needs f to map shape \(2, 3\) to the same shape; got \(2, 2\)",
    ):
        cf.ops.divergence(lambda v: v[:, :2], K.convert_to_tensor(X))


def test_grad_rejects_non_scalar():
    with pytest.raises(ValueError, match=r"f to return a scalar; got shape \(2, 3\)"):
        cf.ops.grad(lambda x: x * 2.0)(K.convert_to_tensor(X))


def test_unknown_divergence_method():
    with pytest.raises(ValueError, match="'exact' or 'hutchinson'; got 'fast'"):
        cf.ops.divergence(K.tanh, K.convert_to_tensor(X), method="fast")

"""The numerical core of ``check_gradients``: evaluation, finite differences, autograd's side, the
allowance, the comparisons and the checks beside them. Private: modules inside may import each other's
private names; code outside imports public names only (see ``docs/architecture.md``)."""

"""Repository packing order: import chains, cycles, tests beside implementations, context files."""

from codegemma.repo.graph import build_graph, implementation_for_test
from codegemma.repo.order import order_repository
from codegemma.repo.context import related_files


def test_import_chain_orders_dependencies_first():
    files = {
        "app/main.py": "from app import service\nservice.run()\n",
        "app/service.py": "from app.models import User\nimport app.util\nUser()\n",
        "app/models.py": "from .util import helper\nhelper()\nhelper()\n",
        "app/util.py": "def helper():\n    return 1\n",
        "README_notes.py": "x = 1\n",
    }
    order = order_repository(files)
    assert order.index("app/util.py") < order.index("app/models.py") < order.index("app/service.py") < order.index("app/main.py")
    # README_notes.py is not covered by the graph: it follows alphabetically after the graph part
    assert order[-1] == "README_notes.py"


def test_cycle_is_broken_at_its_lightest_edge():
    # a <-> b: a uses b heavily, b uses a once -> the b->a edge is dropped, so b comes first.
    files = {
        "pkg/a.py": "from pkg import b\n" + "b.f()\n" * 5,
        "pkg/b.py": "from pkg import a\na.g()\n",
        "pkg/c.py": "from pkg import a\na.g()\na.g()\n",
    }
    g = build_graph(files)
    assert ("pkg/b.py", "pkg/a.py") in g.dropped
    assert ("pkg/a.py", "pkg/b.py") in g.edges
    assert order_repository(files) == ["pkg/b.py", "pkg/a.py", "pkg/c.py"]


def test_nearest_available_file_is_picked_next():
    # two independent chains; after x1 the nearest available is x2 (distance 1), not y1 (inf)
    files = {
        "x1.py": "", "x2.py": "import x1\nx1.a\n",
        "y1.py": "", "y2.py": "import y1\ny1.a\n",
        "a0.py": "",
    }
    order = order_repository(files)
    assert order == ["x1.py", "x2.py", "y1.py", "y2.py", "a0.py"]


def test_unit_tests_sit_beside_their_implementation():
    files = {
        "src/Bar.java": "class Bar {}\n", "src/Foo.java": "class Foo {}\n",
        "src/Zed.java": "class Zed {}\n", "test/TestFoo.java": "class TestFoo {}\n",
        "lib/foo.py": "x = 1\n", "lib/test_foo.py": "y = 2\n", "lib/aaa.py": "z = 3\n",
        "cmd/foo_test.go": "package cmd\n", "cmd/foo.go": "package cmd\n",
        "web/foo.test.ts": "test()\n", "web/foo.ts": "export const a = 1\n",
    }
    order = order_repository(files)
    for test, impl in [("test/TestFoo.java", "src/Foo.java"), ("lib/test_foo.py", "lib/foo.py"),
                       ("cmd/foo_test.go", "cmd/foo.go"), ("web/foo.test.ts", "web/foo.ts")]:
        assert order.index(test) == order.index(impl) + 1, (test, order)
    assert order.index("src/Bar.java") < order.index("src/Foo.java") < order.index("src/Zed.java")


def test_test_name_rules():
    assert implementation_for_test("a/TestFoo.java") == "Foo.java"
    assert implementation_for_test("a/FooTests.cs") == "Foo.cs"
    assert implementation_for_test("a/foo.spec.js") == "foo.js"
    assert implementation_for_test("a/Testing.java") is None
    assert implementation_for_test("a/foo.py") is None


def test_multi_line_imports_order_a_repository_and_pick_its_context():
    # every import below spans several lines; the old line-regex parser saw none of them
    files = {
        "shop/cart.py": ("from shop.pricing import (\n    total,\n    discount,\n)\n"
                         "from .models import (\n    Item,\n)\n\ndef checkout(items):\n"
                         "    return total(items) - discount(items)\n"),
        "shop/pricing.py": "from .models import (\n    Item,\n    Price)\n\ndef total(items):\n    return sum(Price)\n",
        "shop/models.py": "class Item:\n    pass\n\nclass Price:\n    pass\n",
        "shop/api.py": "from shop.cart import (\n    checkout\n)\ncheckout([])\n",
        "shop/zzz_unrelated.py": "VALUE = 1\n",
        "web/client.ts": "import {\n  checkout,\n} from './cart';\ncheckout();\n",
        "web/cart.ts": "export function checkout() {}\n",
    }
    order = order_repository(files)
    assert order.index("shop/models.py") < order.index("shop/pricing.py") < order.index("shop/cart.py") \
        < order.index("shop/api.py")
    assert order.index("web/cart.ts") < order.index("web/client.ts")
    # the files cart.py depends on come first; api.py (which imports cart.py) only when the budget
    # has room after them; returned in packing order
    assert related_files(files, "shop/cart.py", budget=160) == ["shop/models.py", "shop/pricing.py"]
    assert related_files(files, "shop/cart.py", budget=250) == ["shop/models.py", "shop/pricing.py", "shop/api.py"]
    assert related_files(files, "shop/api.py", budget=170) == ["shop/cart.py"]
    assert related_files(files, "web/client.ts", budget=50) == ["web/cart.ts"]


def test_cross_language_resolution():
    files = {
        "src/main.rs": "mod parser;\nuse crate::lex::Token;\n",
        "src/parser.rs": "use crate::lex;\n",
        "src/lex.rs": "pub struct Token;\n",
        "cmd/main.go": 'package main\nimport "github.com/acme/proj/pkg/util"\n',
        "pkg/util/strings.go": "package util\n",
        "pkg/util/strings_test.go": "package util\n",
    }
    g = build_graph(files)
    assert ("src/main.rs", "src/parser.rs") in g.edges
    assert ("src/main.rs", "src/lex.rs") in g.edges
    assert ("cmd/main.go", "pkg/util/strings.go") in g.edges
    assert ("cmd/main.go", "pkg/util/strings_test.go") not in g.edges


def test_related_files_prefers_imports_within_budget():
    files = {
        "app/main.py": "from app import service\nservice.run()\n",
        "app/service.py": "from app import models\nmodels.x\n",
        "app/models.py": "x = 1\n",
        "app/unrelated.py": "y = 2\n" * 50,
        "app/test_main.py": "import pytest\n",
    }
    got = related_files(files, "app/main.py", budget=200)
    assert got == ["app/models.py", "app/service.py", "app/test_main.py"]
    assert related_files(files, "app/main.py", budget=60) == ["app/service.py"]


def test_pure_python_graph_algorithms_match_scipy():
    import numpy as np

    from codegemma.repo import algorithms
    from codegemma.repo.algorithms import Graph, _tarjan

    rng = np.random.default_rng(0)
    n = 60
    src, dst = rng.integers(0, n, 150), rng.integers(0, n, 150)
    g = Graph(n, src, dst)
    plain = Graph.__new__(Graph)
    plain.__init__(n, src, dst)
    plain._csr = None                      # force the fallbacks
    for s in (0, 7, 59):
        assert np.array_equal(g.distances_from(s), plain.distances_from(s))
        assert np.array_equal(g.distances_from(s, directed=True), plain.distances_from(s, directed=True))
    chain = Graph(3, np.array([0, 1]), np.array([1, 2]))          # 0 -> 1 -> 2
    assert chain.distances_from(2).tolist() == [2, 1, 0]
    assert chain.distances_from(2, directed=True).tolist() == [np.inf, np.inf, 0]
    a, b = g.strong_components(), _tarjan(n, src.tolist(), dst.tolist())
    # same partition (labels may be numbered differently)
    assert len({(x, y) for x, y in zip(a, b)}) == len(set(a)) == len(set(b))
    assert algorithms.csr_matrix is not None


def test_root_package_is_found_by_its_name():
    files = {"__init__.py": "from .core import run\n", "core.py": "def run():\n    pass\n",
             "cli.py": "import numpyish\nnumpyish.run()\n"}
    g = build_graph(files, package="numpyish")
    assert ("cli.py", "__init__.py") in g.edges and ("__init__.py", "core.py") in g.edges
    assert order_repository(files, package="numpyish") == ["core.py", "__init__.py", "cli.py"]
    assert ("cli.py", "__init__.py") not in build_graph(files).edges

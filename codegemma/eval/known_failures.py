"""Reference solutions that fail for a reason upstream, found by the canonical self-test
(`codegemma eval score --suite multilingual --canonical`): benchmark -> task id -> why.

The self-test expects exactly these to fail (one that passes is fine: Go/95 is flaky). Kinds: a
wrong or placeholder reference; one that does not compile; one that exits with status 0 before
the tests ran (MxEval counted exit status 0 as a pass, our harness needs the tests to finish); a
wrong test; and "toolchain": a reference that needs a newer compiler or library than Debian 12
ships (C# 8 / .NET 6 for Mono 6.8, Kotlin 1.4-1.7 for Kotlin 1.3.31), not scored here.
docs/eval.md summarises them.
"""

KNOWN_BAD_REFERENCES: dict[str, dict[str, str]] = {
    "humaneval-x-go": {
        "Go/95": "flaky reference: it stops looking after the second key, so its answer depends "
            "on Go's random map order and it fails in some runs",
    },
    "humaneval-x-js": {
        "JavaScript/112": "wrong reference: it returns (z, false), which is just false, where the "
            "tests expect [string, bool]; it passed upstream only because console.assert does not "
            "throw",
        "JavaScript/155": "wrong reference: it returns [0, 0] for 0 (its loop never runs), where "
            "the test expects [1, 0]; it passed upstream only because console.assert does not "
            "throw",
    },
    "mbxp-cpp": {
        "MBCPP/769": "exits early: the reference calls exit(0) when the lists differ in length, "
            "before the tests ran (MxEval counted exit status 0 as a pass)",
    },
    "mbxp-csharp": {
        "MBCSP/54": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/57": "wrong reference: it joins the digits in the given order (123), not into the "
            "largest number (321)",
        "MBCSP/64": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/71": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/87": "wrong reference for its test: the merged dictionary keeps insertion order, "
            "the test expects another key order, and Compare-Net-Objects compares dictionaries "
            "entry by entry in order",
        "MBCSP/147": "wrong reference: a greedy walk, not the triangle's maximum path sum",
        "MBCSP/152": "toolchain: Debian's Mono compiler (mcs, C# 7 without local functions) "
            "rejects the lambda parameter x that shadows the method's parameter x, legal since C# "
            "8 (MxEval builds with dotnet 6)",
        "MBCSP/209": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/229": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/240": "wrong reference: it returns the first list unchanged",
        "MBCSP/275": "wrong reference: a binary search unrelated to the task",
        "MBCSP/323": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/333": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/351": "toolchain: FirstOrDefault(defaultValue) is .NET 6 API, absent from Debian's "
            "Mono 6.8 (MxEval builds with dotnet 6)",
        "MBCSP/353": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/428": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/487": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/505": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/561": "wrong reference for its test: its keys come in first-seen order, the test "
            "expects another, and Compare-Net-Objects compares dictionaries entry by entry in "
            "order",
        "MBCSP/591": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/625": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/656": "wrong reference: it sums |a[i] - b[i]| without sorting the arrays first (4 "
            "where 0 is expected)",
        "MBCSP/705": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/750": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/815": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/821": "wrong reference for its test: the merged dictionary keeps insertion order, "
            "the test expects another key order, and Compare-Net-Objects compares dictionaries "
            "entry by entry in order",
        "MBCSP/824": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/839": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/852": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/854": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/889": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/905": "toolchain: Debian's Mono compiler (mcs) has no local functions (C# 7), "
            "which the reference uses (MxEval builds with dotnet 6)",
        "MBCSP/940": "wrong reference: a placeholder (`// write your code here`) that returns its "
            "input unchanged",
        "MBCSP/947": "toolchain: FirstOrDefault(defaultValue) is .NET 6 API, absent from Debian's "
            "Mono 6.8 (MxEval builds with dotnet 6)",
    },
    "mbxp-java": {
        "MBJP/106": "exits early: the reference calls exit with status 0 before the tests "
            "finished (MxEval counted exit status 0 as a pass)",
        "MBJP/180": "does not compile: incompatible types: Number cannot be converted to double "
            "(Math.sin of a Number parameter)",
        "MBJP/198": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/214": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/300": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/325": "exits early: the reference calls exit with status 0 before the tests "
            "finished (MxEval counted exit status 0 as a pass)",
        "MBJP/397": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/432": "does not compile: incompatible types: Number cannot be converted to double",
        "MBJP/519": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/535": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/553": "exits early: the reference calls exit with status 0 before the tests "
            "finished (MxEval counted exit status 0 as a pass)",
        "MBJP/579": "exits early: the reference calls exit with status 0 before the tests "
            "finished (MxEval counted exit status 0 as a pass)",
        "MBJP/622": "does not compile: incompatible types: Integer cannot be converted to Double",
        "MBJP/738": "does not compile: incompatible types: int cannot be converted to Double",
        "MBJP/835": "exits early: the reference calls exit with status 0 before the tests "
            "finished (MxEval counted exit status 0 as a pass)",
        "MBJP/871": "exits early: the reference calls exit with status 0 before the tests "
            "finished (MxEval counted exit status 0 as a pass)",
        "MBJP/904": "does not compile: bad operand types for binary operator '%' (on a Number "
            "parameter)",
    },
    "mbxp-js": {
        "MBJSP/2": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/18": "wrong reference: ReferenceError: secondString is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/26": "wrong reference: ReferenceError: testList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/29": "wrong reference: ReferenceError: arrSize is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/37": "wrong reference: ReferenceError: mixedList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/50": "wrong reference: ReferenceError: inputList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/54": "wrong reference: ReferenceError: myList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/63": "wrong reference: ReferenceError: testList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/65": "wrong reference: ReferenceError: dataList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/81": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/91": "wrong reference: ReferenceError: subStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/94": "wrong reference: ReferenceError: testList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/104": "wrong reference: ReferenceError: inputList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/106": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/110": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/129": "wrong reference: ReferenceError: myMatrix is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/140": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/156": "wrong reference: ReferenceError: tupleStr is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/174": "wrong test: its expected objects have keys with doubled quotes "
            "('\"yellow\"'), which no correct answer produces",
        "MBJSP/193": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/196": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/197": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/205": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/206": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/213": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/222": "wrong reference: ReferenceError: testTuple is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/230": "wrong reference: ReferenceError: char is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/237": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/249": "wrong reference: ReferenceError: arrayNums2 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/258": "wrong reference: ReferenceError: arrayNums is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/259": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/261": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/264": "wrong reference: ReferenceError: hAge is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/272": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/273": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/278": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/281": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/324": "wrong reference: ReferenceError: testTuple is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/326": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/333": "wrong reference: ReferenceError: subLi is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/357": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/363": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/366": "wrong reference: ReferenceError: listNums is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/368": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/371": "wrong reference: ReferenceError: leftElement is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/376": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/378": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/381": "wrong reference: ReferenceError: listData is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/393": "wrong reference: ReferenceError: inputList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/394": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/399": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/400": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/401": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/421": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/424": "wrong reference: ReferenceError: testTuple is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/428": "wrong reference: ReferenceError: myList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/429": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/438": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/445": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/452": "wrong reference: ReferenceError: actualCost is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/470": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/473": "wrong reference: ReferenceError: testList1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/484": "wrong reference: ReferenceError: testList1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/492": "wrong reference: ReferenceError: itemList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/494": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/512": "wrong reference: ReferenceError: testTuple is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/513": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/514": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/544": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/546": "wrong reference: ReferenceError: char is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/552": "wrong reference: ReferenceError: seqNums is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/553": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/560": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/561": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/573": "wrong reference: ReferenceError: listData is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/580": "wrong reference: ReferenceError: testTuple is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/585": "wrong test: its item objects have keys with doubled quotes ('\"price\"'), "
            "so the reference's b.price is undefined",
        "MBJSP/611": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/613": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/614": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/616": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/619": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/621": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/630": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/632": "wrong reference: ReferenceError: numList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/637": "wrong reference: ReferenceError: actualCost is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/639": "wrong reference: ReferenceError: sampleNames is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/645": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/651": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/653": "wrong test: its expected objects have keys with doubled quotes "
            "('\"yellow\"'), which no correct answer produces",
        "MBJSP/665": "wrong reference: ReferenceError: numList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/668": "wrong reference: ReferenceError: char is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/679": "wrong test: its dictionaries have keys with doubled quotes ('\"physics\"'), "
            "so the expected key names never match",
        "MBJSP/691": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/694": "wrong reference: ReferenceError: testDict is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/695": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/697": "wrong reference: ReferenceError: arrayNums is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/698": "wrong reference: ReferenceError: testDict is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/710": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/713": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/715": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/720": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/726": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/740": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/744": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/749": "wrong reference: ReferenceError: numsStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/750": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/753": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/757": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/772": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/776": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/780": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/785": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/788": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/791": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/792": "wrong reference: ReferenceError: inputList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/795": "wrong reference: it walks the list from both ends instead of picking the n "
            "cheapest items",
        "MBJSP/806": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/808": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/809": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/811": "wrong reference: ReferenceError: testList1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/825": "wrong reference: ReferenceError: listIndex is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/842": "wrong reference: ReferenceError: arrSize is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/844": "wrong reference: it returns random numbers (Math.random) instead of the "
            "k-th element",
        "MBJSP/852": "wrong reference: ReferenceError: numList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/858": "wrong reference: ReferenceError: inputList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/875": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/878": "wrong reference: ReferenceError: testTuple is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/888": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/894": "wrong reference: ReferenceError: testStr is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/915": "wrong reference: ReferenceError: arrayNums is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/916": "wrong reference: ReferenceError: arrSize is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/920": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/921": "wrong reference: ReferenceError: testTup is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/936": "wrong reference: ReferenceError: ordList is not defined (it uses a name its "
            "signature does not have)",
        "MBJSP/939": "wrong test: its objects have keys with doubled quotes ('\"model\"'), so the "
            "reference's b.model is undefined",
        "MBJSP/942": "wrong reference: ReferenceError: checkList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/951": "wrong reference: ReferenceError: testList1 is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/954": "wrong reference: ReferenceError: actualCost is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/969": "wrong reference: ReferenceError: testList is not defined (it uses a name "
            "its signature does not have)",
        "MBJSP/972": "wrong reference: ReferenceError: testTup1 is not defined (it uses a name "
            "its signature does not have)",
    },
    "mbxp-kotlin": {
        "MBKP/63": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/73": "wrong test: its raw-string inputs (\"\"\"...\\n...\"\"\") hold a backslash "
            "and an n, not the newline the expected output splits on",
        "MBKP/108": "toolchain: kotlin.collections.ArrayDeque is Kotlin 1.4 API; Debian 12 ships "
            "Kotlin 1.3.31",
        "MBKP/120": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/139": "does not compile: the integer literal -1 where a Double is expected",
        "MBKP/153": "does not compile: an ArrayList<Number> returned where List<Double> is "
            "expected",
        "MBKP/158": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/180": "does not compile: toDouble() on parameters of type Any",
        "MBKP/230": "wrong reference: it uses `char`, a name its signature does not have (the "
            "parameter is ch)",
        "MBKP/231": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/357": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/403": "wrong test: its raw-string input \"\"\"https:\\/\\/www.google.com\"\"\" "
            "keeps the backslashes, so it is not the URL the reference looks for",
        "MBKP/476": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/519": "does not compile: the integer literal 0 where a Double is expected",
        "MBKP/546": "wrong reference: it uses `char`, a name its signature does not have",
        "MBKP/563": "wrong test: its raw-string input \"\"\"\\\"Python\\\", ...\"\"\" keeps the "
            "backslashes, which end up in the extracted values",
        "MBKP/588": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/594": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/611": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/658": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/666": "wrong reference: it uses `char`, a name its signature does not have",
        "MBKP/668": "wrong reference: it uses `char`, a name its signature does not have",
        "MBKP/731": "does not compile: the integer literal 0 where a Double is expected",
        "MBKP/788": "does not compile: `newList += testStr` on a var MutableList is ambiguous "
            "(plusAssign or plus)",
        "MBKP/805": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/807": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
        "MBKP/867": "toolchain: it uses max()/min()/maxBy/minBy as non-null, which they are only "
            "since Kotlin 1.7; Debian 12 ships Kotlin 1.3.31, where they return a nullable "
            "(whether the reference is right is not known here)",
    },
    "mbxp-python": {
        "MBPP/56": "broken upstream: the entry point is named check, which the test's own "
            "check(candidate) replaces, so check(check) runs the test on itself",
        "MBPP/64": "does not compile: the reference is indented by one space after a comment line "
            "(IndentationError)",
        "MBPP/160": "wrong test: it expects 'No candidate' (the conversion renamed solution to "
            "candidate inside a string); the reference returns 'No solution'",
        "MBPP/349": "broken upstream: the entry point is named check, which the test's own "
            "check(candidate) replaces, so check(check) runs the test on itself",
        "MBPP/367": "wrong test: it uses trees root, root1, root2 that MBPP's test_setup_code "
            "defined and MBXP dropped (NameError)",
        "MBPP/596": "version-dependent test: it expects sys.getsizeof values of an older CPython "
            "(104, 88); CPython 3.11 reports other sizes",
        "MBPP/601": "wrong test: it builds Pair objects, a class the reference defines inside its "
            "own function (NameError)",
        "MBPP/607": "wrong reference: it ignores its arguments and searches a fixed sentence for "
            "'fox'",
        "MBPP/631": "wrong reference: it ignores its argument and converts the fixed text 'Python "
            "Exercises'",
        "MBPP/642": "wrong test: it compares tuples built from sets, whose element order is the "
            "sets' hash order",
        "MBPP/899": "broken upstream: the entry point is named check, which the test's own "
            "check(candidate) replaces, so check(check) runs the test on itself",
        "MBPP/927": "wrong test: it uses trees root, root1, root2 that MBPP's test_setup_code "
            "defined and MBXP dropped (NameError)",
        "MBPP/966": "does not compile: unexpected indent in the reference",
        "MBPP/967": "broken upstream: the entry point is named check, which the test's own "
            "check(candidate) replaces, so check(check) runs the test on itself",
    },
}

"""The test harness that runs inside the sandbox, next to the candidate solution (the host reads this
file's source and appends one call of `_si_run`).

It loads the candidate, then runs the tests, and reports through lines tagged with a per-run secret
(the nonce) that only the harness knows: it arrives on stdin and is read before the candidate runs, so
printing fake results, exiting early (sys.exit / os._exit) or killing itself can never look like
passing tests. Asserts are rewritten (host side, `testing.py`) so that comparisons refuse objects
whose comparison/truth methods were written by the candidate (the "always equal" hack), and the tests
run with a snapshot of the builtins taken before the candidate ran (tampering with builtins or
AssertionError does not help it). Everything it uses is imported inside the function, so the program
is self-contained.
"""


def _si_run(cand_src, chunks, entry_point):
    import os, sys, builtins, types, operator, reprlib
    read, write, exit_, dup = os.read, os.write, os._exit, os.dup
    AE, BE, SE, FT, isinst, typ, strf = AssertionError, BaseException, SystemExit, types.FunctionType, isinstance, type, str
    nonce = read(0, 256).decode("ascii", "replace").strip()
    out = dup(1)
    real_out, real_err = sys.stdout, sys.stderr
    snapshot = dict(builtins.__dict__)
    mro_of = type.__dict__["__mro__"].__get__
    dict_of = type.__dict__["__dict__"].__get__
    stdlib = os.path.dirname(os.__file__) + "/"
    native = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
              types.MethodWrapperType, types.ClassMethodDescriptorType)
    leaf = frozenset((int, float, complex, str, bytes, bool, type(None)))
    dunders = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__",
               "__contains__", "__hash__")
    shortrepr = reprlib.Repr()
    shortrepr.maxstring = shortrepr.maxother = 80
    shortrepr.maxlist = shortrepr.maxtuple = shortrepr.maxdict = shortrepr.maxset = 12
    total = sum(1 for counted, _, _ in chunks if counted) + (1 if entry_point else 0)

    def emit(line):
        try:
            write(out, ("\n" + nonce + " " + line + "\n").encode("utf-8", "replace"))
        except BE:
            pass

    def finish(passed, reason):
        for stream in (real_out, real_err):
            try:
                stream.flush()
            except BE:
                pass
        emit("END %d %d %s" % (passed, total, reason[:1500].encode("utf-8", "replace").hex()))
        exit_(0)

    def safe(f, *args):
        try:
            return strf(f(*args))[:300]
        except BE:
            return "?"

    def describe(e):
        if isinst(e, MemoryError):
            return "MemoryError (memory limit exceeded)"
        t = typ(e)
        name = safe(lambda: t.__name__)
        message = safe(strf, e)
        return name + (": " + message if message else "")

    def where(e):
        tb, found = e.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "solution.py":
                found = tb.tb_lineno
            tb = tb.tb_next
        if found is None:
            return ""
        lines = cand_src.splitlines()
        text = lines[found - 1].strip() if 0 < found <= len(lines) else ""
        return " (solution.py line %d: %s)" % (found, text[:120])

    def foreign(t):
        mro = mro_of(t)
        for name in dunders:
            for klass in mro:
                d = dict_of(klass)
                if name in d:
                    f = d[name]
                    if isinst(f, (staticmethod, classmethod)):
                        f = f.__func__
                    if f is None or isinst(f, native):
                        break
                    if typ(f) is FT and f.__code__.co_filename.startswith(stdlib):
                        break
                    return safe(lambda: klass.__name__) + "." + name
        return None

    def untrusted(value):
        stack, seen, budget = [value], set(), 20000
        while stack:
            x = stack.pop()
            t = typ(x)
            if t in leaf:
                continue
            budget -= 1
            if budget < 0:
                return None
            bad = foreign(t)
            if bad:
                return "the solution returned an object whose %s is defined by the solution" % bad
            if id(x) in seen:
                continue
            if isinst(x, dict):
                seen.add(id(x))
                stack.extend(dict.keys(x))
                stack.extend(dict.values(x))
            elif isinst(x, (list, tuple, set, frozenset)):
                seen.add(id(x))
                base = list if isinst(x, list) else tuple if isinst(x, tuple) else set if isinst(x, set) else frozenset
                stack.extend(base.__iter__(x))
        return None

    class Untrusted(Exception):
        pass

    class Marker:
        def __init__(self, src, user):
            self.src, self.user = src, user

    last = [None]
    ops = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge, "is": operator.is_, "is not": operator.is_not,
           "in": lambda a, b: operator.contains(b, a), "not in": lambda a, b: not operator.contains(b, a)}

    def check_cmp(op, a, b):
        for side in (a, b):
            why = untrusted(side)
            if why:
                raise Untrusted(why)
        last[0] = (op, a, b)
        return ops[op](a, b)

    def check_chain(names, *values):
        for i, op in enumerate(names):
            if not check_cmp(op, values[i], values[i + 1]):
                return False
        return True

    def check_truth(value):
        last[0] = None
        why = untrusted(value)
        if why:
            raise Untrusted(why)
        return bool(value)

    def failure(e, src):
        args = e.args
        if args and isinst(args[0], Marker):
            m = args[0]
            text = m.src
            if m.user is not None:
                text += " (" + safe(strf, m.user) + ")"
            if last[0] is not None:
                op, a, b = last[0]
                got = safe(shortrepr.repr, a)
                if op == "==":
                    text += " -- got " + got + ", expected " + safe(shortrepr.repr, b)
                else:
                    text += " -- left side " + got + ", right side " + safe(shortrepr.repr, b)
            return text
        return src + (" -- AssertionError: " + safe(strf, args[0]) if args else " -- AssertionError")

    helpers = {"_sandbox_cmp": check_cmp, "_sandbox_chain": check_chain, "_sandbox_truth": check_truth,
               "_sandbox_msg": lambda src, user=None: Marker(src, user)}
    compiled = []
    for i, (counted, orig, src) in enumerate(chunks):
        try:
            compiled.append((counted, orig, compile(src, "<test %d>" % (i + 1), "exec")))
        except BE as e:
            finish(0, "the tests do not compile: " + describe(e))
    try:
        code = compile(cand_src, "solution.py", "exec")
    except SyntaxError as e:
        finish(0, "syntax error in the solution at line %s: %s" % (e.lineno, safe(lambda: e.msg)))  # noqa: F821
    except BE as e:
        finish(0, "the solution does not compile: " + describe(e))
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(code, ns)
    except SE as e:
        finish(0, "the solution exited (SystemExit %s) before the tests ran" % safe(repr, e.code))
    except BE as e:
        finish(0, "the solution raised " + describe(e) + " while loading" + where(e))
    if entry_point and entry_point not in ns:
        finish(0, "the solution does not define %s" % entry_point)
    env = dict(ns)
    env["__builtins__"] = dict(snapshot)
    env.update(helpers)
    if entry_point:
        compiled.append((True, "check(%s)" % entry_point, compile("check(%s)" % entry_point, "<check>", "exec")))
    passed, index = 0, 0
    for counted, orig, code in compiled:
        label = "test %d/%d" % (index + 1, total) if counted else "test setup"
        if counted:
            emit("START %d" % index)
        last[0] = None
        try:
            exec(code, env)
        except AE as e:
            finish(passed, label + " failed: " + failure(e, orig))
        except Untrusted as e:
            finish(passed, label + " failed: " + strf(e.args[0]) + " (" + orig + ")")
        except SE as e:
            finish(passed, label + ": the solution exited (SystemExit %s) during %s" % (safe(repr, e.code), orig))
        except BE as e:
            finish(passed, label + " raised " + describe(e) + where(e) + " in " + orig)
        if counted:
            passed += 1
            index += 1
    finish(passed, "all tests passed (%d/%d)" % (passed, total))

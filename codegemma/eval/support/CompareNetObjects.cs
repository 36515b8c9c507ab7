// A stand-in for the NuGet package Compare-Net-Objects (KellermanSoftware.CompareNetObjects),
// which the MxEval C# tests (Multi-HumanEval, MBXP) call as
//     new CompareLogic().Compare(actual, expected).AreEqual
// Debian ships no build of it, so codegemma compiles this file once per machine (mcs) and puts
// the library beside each C# sample. It follows the package's default settings: objects of
// different runtime types differ; numbers, strings, enums and other simple values compare with
// Equals (doubles exactly); lists, arrays, sets and dictionaries compare element by element in
// their enumeration order; other objects compare their public fields and properties.
using System;
using System.Collections;
using System.Reflection;

namespace KellermanSoftware.CompareNetObjects
{
    public class ComparisonResult
    {
        public bool AreEqual { get { return Differences == null; } }
        public string Differences { get; internal set; }
        public string DifferencesString { get { return Differences ?? ""; } }
    }

    public class CompareLogic
    {
        const int MaxDepth = 64;

        public ComparisonResult Compare(object expected, object actual)
        {
            return new ComparisonResult { Differences = Diff(expected, actual, "", 0) };
        }

        static bool IsSimple(Type t)
        {
            return t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(decimal)
                || t == typeof(DateTime) || t == typeof(TimeSpan) || t == typeof(Guid)
                || t.FullName == "System.Numerics.BigInteger";
        }

        static string Diff(object a, object b, string path, int depth)
        {
            if (a == null || b == null)
                return a == null && b == null ? null : path + ": one value is null";
            Type ta = a.GetType(), tb = b.GetType();
            if (ta != tb)
                return path + ": types differ (" + ta.Name + ", " + tb.Name + ")";
            if (depth > MaxDepth)
                return path + ": nested too deeply";
            if (IsSimple(ta))
                return a.Equals(b) ? null : path + ": " + a + " != " + b;
            if (a is IDictionary)
            {
                IDictionary da = (IDictionary)a, db = (IDictionary)b;
                if (da.Count != db.Count)
                    return path + ": counts differ";
                IDictionaryEnumerator ea = da.GetEnumerator(), eb = db.GetEnumerator();
                while (ea.MoveNext() && eb.MoveNext())
                {
                    string d = Diff(ea.Key, eb.Key, path + "[key]", depth + 1)
                        ?? Diff(ea.Value, eb.Value, path + "[" + ea.Key + "]", depth + 1);
                    if (d != null)
                        return d;
                }
                return null;
            }
            if (a is IEnumerable)
            {
                IEnumerator ea = ((IEnumerable)a).GetEnumerator(), eb = ((IEnumerable)b).GetEnumerator();
                for (int i = 0; ; i++)
                {
                    bool ma = ea.MoveNext(), mb = eb.MoveNext();
                    if (ma != mb)
                        return path + ": lengths differ";
                    if (!ma)
                        return null;
                    string d = Diff(ea.Current, eb.Current, path + "[" + i + "]", depth + 1);
                    if (d != null)
                        return d;
                }
            }
            foreach (FieldInfo f in ta.GetFields(BindingFlags.Public | BindingFlags.Instance))
            {
                string d = Diff(f.GetValue(a), f.GetValue(b), path + "." + f.Name, depth + 1);
                if (d != null)
                    return d;
            }
            foreach (PropertyInfo p in ta.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                if (p.GetIndexParameters().Length > 0 || !p.CanRead)
                    continue;
                string d = Diff(p.GetValue(a, null), p.GetValue(b, null), path + "." + p.Name, depth + 1);
                if (d != null)
                    return d;
            }
            return null;
        }
    }
}

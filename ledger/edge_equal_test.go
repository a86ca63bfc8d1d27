package ledger

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

var timeType = reflect.TypeFor[time.Time]()

// fillEdge sets every field of v, down to the fields of slice elements
// and pointed-to structs, to a value that is not the zero one.
func fillEdge(v reflect.Value) {
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(time.Unix(1700000000, 0).UTC()))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fillEdge(v.Field(i))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillEdge(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fillEdge(v.Index(0))
	case reflect.String:
		v.SetString("a")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Bool:
		v.SetBool(true)
	default:
		panic("fillEdge: a field of kind " + v.Kind().String() + ": teach this test (and sameEdge, appendEdge) about it")
	}
}

// changeLeaf changes the n-th value of v (each scalar field, and each
// slice's length, in order) and returns its path, or "" when v has fewer.
func changeLeaf(v reflect.Value, path string, n *int) string {
	leaf := func(change func()) string {
		if *n == 0 {
			change()
			return path
		}
		*n--
		return ""
	}
	if v.Type() == timeType {
		return leaf(func() { v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Second))) })
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if p := changeLeaf(v.Field(i), path+"."+v.Type().Field(i).Name, n); p != "" {
				return p
			}
		}
		return ""
	case reflect.Pointer:
		if p := leaf(func() { v.Set(reflect.Zero(v.Type())) }); p != "" {
			return p + "=nil"
		}
		return changeLeaf(v.Elem(), path, n)
	case reflect.Slice:
		if p := leaf(func() { v.Set(reflect.Append(v, v.Index(0))) }); p != "" {
			return p + "+1"
		}
		return changeLeaf(v.Index(0), path+"[0]", n)
	case reflect.String:
		return leaf(func() { v.SetString(v.String() + "x") })
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return leaf(func() { v.SetInt(v.Int() + 1) })
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return leaf(func() { v.SetUint(v.Uint() + 1) })
	case reflect.Bool:
		return leaf(func() { v.SetBool(!v.Bool()) })
	}
	panic("changeLeaf: a field of kind " + v.Kind().String())
}

// TestSameEdgeCoversEveryField: two edges that differ in any one field
// of Edge (or of its segments, records, snapshots) are a change to the
// journal (Delta puts it) and have different digests (so that a failed
// write of it is recognised). It fails when Edge gains a field that
// sameEdge or appendEdge leaves out.
func TestSameEdgeCoversEveryField(t *testing.T) {
	var base Edge
	fillEdge(reflect.ValueOf(&base).Elem())
	if !sameEdge(base, base) {
		t.Fatal("sameEdge(e, e) is false")
	}
	seen := map[string]bool{}
	for k := 0; ; k++ {
		var e Edge
		fillEdge(reflect.ValueOf(&e).Elem())
		n := k
		path := changeLeaf(reflect.ValueOf(&e).Elem(), "Edge", &n)
		if path == "" {
			break
		}
		seen[path] = true
		if sameEdge(base, e) || sameEdge(e, base) {
			t.Errorf("sameEdge ignores a change of %s", path)
		}
		if Digest([]Edge{base}) == Digest([]Edge{e}) {
			t.Errorf("Digest ignores a change of %s", path)
		}
	}
	// Every field of Edge was changed (the walk reaches them all).
	fields := map[string]bool{}
	for p := range seen {
		name := strings.TrimPrefix(p, "Edge.")
		fields[name[:strings.IndexFunc(name+".", func(r rune) bool { return strings.ContainsRune(".[+=", r) })]] = true
	}
	typ := reflect.TypeFor[Edge]()
	for i := range typ.NumField() {
		if !fields[typ.Field(i).Name] {
			t.Errorf("the test changed no value of Edge.%s", typ.Field(i).Name)
		}
	}
}

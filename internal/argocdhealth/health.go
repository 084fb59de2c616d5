// Package argocdhealth runs an Argo CD resource health script (Lua) the way Argo CD does: the object as the
// global obj, the returned table's status and message as the health. Tests use it to prove the shipped
// script against its test cases and against live APIKeys.
package argocdhealth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"

	"github.com/keyward-dev/keyward/internal/testenv"
)

// ScriptPath is the shipped health script of APIKeys.
func ScriptPath() string {
	return filepath.Join(testenv.RepoRoot(), "config", "argocd", "resource_customizations", "keyward.dev", "APIKey", "health.lua")
}

// Health is an Argo CD health assessment.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Evaluate runs script with obj (an object as unstructured JSON) and returns its health.
func Evaluate(script string, obj map[string]any) (Health, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, open := range []lua.LGFunction{lua.OpenBase, lua.OpenTable, lua.OpenString, lua.OpenMath} {
		open(L)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return Health{}, fmt.Errorf("running the health script: %w", err)
	}
	t, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, errors.New("the health script returned no table")
	}
	return Health{Status: lua.LVAsString(t.RawGetString("status")), Message: lua.LVAsString(t.RawGetString("message"))}, nil
}

// EvaluateShipped runs the shipped script.
func EvaluateShipped(obj map[string]any) (Health, error) {
	script, err := os.ReadFile(ScriptPath())
	if err != nil {
		return Health{}, err
	}
	return Evaluate(string(script), obj)
}

func toLua(ls *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case int64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case []any:
		t := ls.NewTable()
		for _, e := range x {
			t.Append(toLua(ls, e))
		}
		return t
	case map[string]any:
		t := ls.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(ls, e))
		}
		return t
	}
	return lua.LString(fmt.Sprint(v))
}

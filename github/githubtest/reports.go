package githubtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/imagegen/imagegen/builds"
)

var statusStates = []string{"pending", "success", "failure", "error"}

func (s *Server) createStatus(w http.ResponseWriter, repo, sha string, body []byte) {
	var in struct {
		State       string `json:"state"`
		TargetURL   string `json:"target_url"`
		Description string `json:"description"`
		Context     string `json:"context"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	switch {
	case !slices.Contains(statusStates, in.State):
		validation(w, "Status", "state", "invalid", "state is not included in the list")
		return
	case utf8.RuneCountInString(in.Description) > 140:
		validation(w, "Status", "description", "custom", "description is too long (maximum is 140 characters)")
		return
	case in.TargetURL != "" && !isHTTPURL(in.TargetURL):
		validation(w, "Status", "target_url", "custom", "target_url must use http(s) scheme")
		return
	}
	if in.Context == "" {
		in.Context = "default"
	}
	st := builds.Status{State: in.State, Context: in.Context, Description: in.Description, TargetURL: in.TargetURL}
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.statuses[repo+"@"+sha] = append(s.statuses[repo+"@"+sha], st)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": id, "state": st.State, "context": st.Context, "description": st.Description,
		"target_url": st.TargetURL, "created_at": time.Now().UTC().Format(time.RFC3339),
	})
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// checkRunIn is a create or update request; pointers tell absent from empty.
type checkRunIn struct {
	Name        *string    `json:"name"`
	HeadSHA     *string    `json:"head_sha"`
	DetailsURL  *string    `json:"details_url"`
	ExternalID  *string    `json:"external_id"`
	Status      *string    `json:"status"`
	Conclusion  *string    `json:"conclusion"`
	StartedAt   *time.Time `json:"started_at"`
	CompletedAt *time.Time `json:"completed_at"`
	Output      *struct {
		Title   *string `json:"title"`
		Summary *string `json:"summary"`
		Text    *string `json:"text"`
	} `json:"output"`
}

var (
	checkStatuses    = []string{"queued", "in_progress", "completed"}
	checkConclusions = []string{"action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"}
)

// validateCheckRun answers 422 and returns false when in breaks GitHub's rules.
func validateCheckRun(w http.ResponseWriter, in *checkRunIn, create bool) bool {
	bad := func(field, msg string) bool {
		validation(w, "CheckRun", field, "invalid", msg)
		return false
	}
	if create && (in.Name == nil || *in.Name == "") {
		return bad("name", "name wasn't supplied")
	}
	if in.Name != nil && *in.Name == "" {
		return bad("name", "name can't be blank")
	}
	if create && (in.HeadSHA == nil || *in.HeadSHA == "") {
		return bad("head_sha", "head_sha wasn't supplied")
	}
	if in.Status != nil && !slices.Contains(checkStatuses, *in.Status) {
		return bad("status", "status is not included in the list")
	}
	if in.Conclusion != nil && !slices.Contains(checkConclusions, *in.Conclusion) {
		return bad("conclusion", "conclusion is not included in the list")
	}
	if in.Status != nil && *in.Status == "completed" && in.Conclusion == nil {
		return bad("conclusion", "conclusion is required when status is completed")
	}
	if in.DetailsURL != nil && *in.DetailsURL != "" && !isHTTPURL(*in.DetailsURL) {
		return bad("details_url", "details_url must use http(s) scheme")
	}
	if o := in.Output; o != nil {
		switch {
		case o.Title == nil || *o.Title == "":
			return bad("output.title", "title wasn't supplied")
		case o.Summary == nil || *o.Summary == "":
			return bad("output.summary", "summary wasn't supplied")
		case utf8.RuneCountInString(*o.Summary) > 65535:
			return bad("output.summary", "summary is too long (maximum is 65535 characters)")
		case o.Text != nil && utf8.RuneCountInString(*o.Text) > 65535:
			return bad("output.text", "text is too long (maximum is 65535 characters)")
		}
	}
	return true
}

func (s *Server) createCheckRun(w http.ResponseWriter, repo string, body []byte) {
	var in checkRunIn
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	if !validateCheckRun(w, &in, true) {
		return
	}
	s.mu.Lock()
	s.nextID++
	cr := &checkRun{repo: repo, run: CheckRun{ID: s.nextID, CheckRun: builds.CheckRun{Status: "queued", StartedAt: time.Now().UTC()}}}
	apply(&cr.run, &in)
	s.checkRuns[repo] = append(s.checkRuns[repo], cr)
	s.runsByID[cr.run.ID] = cr
	out := checkRunJSON(s.URL(), repo, cr.run)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) checkRun(w http.ResponseWriter, method, repo string, id int64, body []byte) {
	s.mu.Lock()
	cr, ok := s.runsByID[id]
	s.mu.Unlock()
	if !ok || cr.repo != repo {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if method == http.MethodPatch {
		var in checkRunIn
		if err := json.Unmarshal(body, &in); err != nil {
			writeError(w, http.StatusBadRequest, "Problems parsing JSON")
			return
		}
		if !validateCheckRun(w, &in, false) {
			return
		}
		s.mu.Lock()
		apply(&cr.run, &in)
		s.mu.Unlock()
	}
	s.mu.Lock()
	out := checkRunJSON(s.URL(), repo, cr.run)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func apply(run *CheckRun, in *checkRunIn) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&run.Name, in.Name)
	set(&run.HeadSHA, in.HeadSHA)
	set(&run.DetailsURL, in.DetailsURL)
	set(&run.ExternalID, in.ExternalID)
	set(&run.Status, in.Status)
	set(&run.Conclusion, in.Conclusion)
	if in.Conclusion != nil {
		run.Status = "completed"
	}
	if in.StartedAt != nil {
		run.StartedAt = *in.StartedAt
	}
	if in.CompletedAt != nil {
		run.CompletedAt = *in.CompletedAt
	}
	if run.Status == "completed" && run.CompletedAt.IsZero() {
		run.CompletedAt = time.Now().UTC()
	}
	if o := in.Output; o != nil {
		run.Title, run.Summary, run.Text = "", "", ""
		set(&run.Title, o.Title)
		set(&run.Summary, o.Summary)
		set(&run.Text, o.Text)
	}
}

func checkRunJSON(api, repo string, run CheckRun) map[string]any {
	m := map[string]any{
		"id": run.ID, "name": run.Name, "head_sha": run.HeadSHA, "status": run.Status,
		"details_url": run.DetailsURL, "external_id": run.ExternalID,
		"url":      fmt.Sprintf("%srepos/%s/check-runs/%d", api, repo, run.ID),
		"html_url": fmt.Sprintf("https://github.com/%s/runs/%d", repo, run.ID),
		"output":   map[string]any{"title": run.Title, "summary": run.Summary, "text": run.Text},
	}
	if run.Conclusion != "" {
		m["conclusion"] = run.Conclusion
	} else {
		m["conclusion"] = nil
	}
	if !run.StartedAt.IsZero() {
		m["started_at"] = run.StartedAt.UTC().Format(time.RFC3339)
	}
	if !run.CompletedAt.IsZero() {
		m["completed_at"] = run.CompletedAt.UTC().Format(time.RFC3339)
	}
	return m
}

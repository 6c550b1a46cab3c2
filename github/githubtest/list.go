package githubtest

import (
	"net/http"
	"strconv"
)

// listCheckRuns serves GET /repos/{repo}/commits/{ref}/check-runs: the runs on
// that commit (ref is a SHA here), filtered by check_name, in pages of per_page.
// filter=latest (GitHub's default) keeps the newest run of each name.
func (s *Server) listCheckRuns(w http.ResponseWriter, r *http.Request, repo, ref string) {
	q := r.URL.Query()
	s.mu.Lock()
	var runs []map[string]any
	latest := map[string]int{} // name → index in runs
	for _, cr := range s.checkRuns[repo] {
		if cr.run.HeadSHA != ref || (q.Get("check_name") != "" && cr.run.Name != q.Get("check_name")) {
			continue
		}
		j := checkRunJSON(s.URL(), repo, cr.run)
		if q.Get("filter") != "all" {
			if i, ok := latest[cr.run.Name]; ok {
				runs[i] = j
				continue
			}
			latest[cr.run.Name] = len(runs)
		}
		runs = append(runs, j)
	}
	s.mu.Unlock()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per <= 0 || per > 100 {
		per = 30
	}
	page, _ := strconv.Atoi(q.Get("page"))
	if page <= 0 {
		page = 1
	}
	total := len(runs)
	lo, hi := min((page-1)*per, total), min(page*per, total)
	writeJSON(w, http.StatusOK, map[string]any{"total_count": total, "check_runs": runs[lo:hi]})
}

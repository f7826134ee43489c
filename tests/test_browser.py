"""The MLflow UI, used as a person would: a real `mlflow server` on the store of a finished search,
driven by headless Chromium through Selenium.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); skipped only when they are
missing outside CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tfkd_search.runfolder import RunFolder
from _proc import cli_env, descendants, free_port, kill_tree, run_cli, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60  # seconds for the UI to show something (first loads of the bundle are slow on 2 cores)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A tiny finished search (2 trials x 2 epochs on digits) with its MLflow SQLite store."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        why = "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: in CI .ci/run installs them")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("ui")
    space = tmp / "ui.yaml"
    space.write_text(yaml.safe_dump({
        "name": "uitest",
        "base": {"model": "tiny_cnn", "method": "tfkd_reg",
                 "data": {"dataset": "digits", "val_fraction": 0.2},
                 "loss": {"semantics": "paper", "tau": 4.0, "alpha": 0.5, "a": 0.9},
                 "schedule": {"epochs": 3, "milestones": [2], "warmup_epochs": 1}},
        "search": {"params": {"loss.tau": {"kind": "grid", "values": [1.0, 8.0]}},
                   "searcher": {"kind": "grid"}, "scheduler": {"kind": "none"},
                   "resources": {"cpu": 1, "gpu": 0}, "finalists": {"top": 0}},
        "export": {"top_k": 1, "seeds": [0], "epochs": 3}}))
    res = run_cli(["--space", str(space), "--storage", str(tmp / "runs")], cli_env(), timeout=300,
                  cwd=tmp)  # cwd: the default artifact root ./mlruns lands in tmp
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp / "runs" / "uitest"
    state = json.loads((run / "search.json").read_text())
    folder = RunFolder(run)
    trials = folder.read_trials()
    best = folder.ranking().best(trials)  # the search's ranking rule, as the export and MLflow
    assert best is not None, trials
    return tmp, state, trials, best


@pytest.fixture(scope="module")
def server(search):
    tmp, state, _, _ = search
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1", "--backend-store-uri", state["mlflow_uri"]],
        cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _healthy(port) or proc.poll() is not None, 120, interval=0.5,
                 what="mlflow server /health")
        assert proc.poll() is None, (tmp / "mlflow-server.log").read_text()[-3000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        pids = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        kill_tree(pids)  # uvicorn's worker, if SIGTERM left it behind
        log.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path / 'chrome-profile'}",
                "--window-size=1600,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _click_if_present(driver, xpath: str) -> bool:
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(By.XPATH, xpath):
        if el.is_displayed():
            driver.execute_script("arguments[0].click()", el)
            return True
    return False


def _text_link(name: str) -> str:
    return f"//a[normalize-space(.)='{name}']"


def test_mlflow_ui_lists_the_search_and_charts_a_trials_val_acc(search, server, browser, tmp_path):
    from mlflow.tracking import MlflowClient
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    _, state, trials, best = search
    client = MlflowClient(server)
    exp = client.get_experiment_by_name(state["name"])
    parent_name = client.get_run(state["parent_run_id"]).info.run_name
    trial_names = [f"trial-{t}" for t in trials["trial_id"]]
    wait = WebDriverWait(browser, WAIT)

    # 1. the experiment page, as a person opens it
    browser.get(f"{server}/#/experiments/{exp.experiment_id}")
    wait.until(EC.presence_of_element_located((By.XPATH, f"//*[contains(., '{state['name']}')]")))
    # MLflow 3 may open on its GenAI overview: switch to model training and its Runs list
    if not browser.find_elements(By.XPATH, _text_link(parent_name)):
        _click_if_present(browser, "//*[normalize-space(text())='Model training']")
        _click_if_present(browser, "//a[normalize-space(.)='Runs'] | //*[@role='tab' and "
                                   "normalize-space(.)='Runs']")
    try:
        parent = WebDriverWait(browser, WAIT).until(
            EC.visibility_of_element_located((By.XPATH, _text_link(parent_name))))
    except TimeoutException:  # an older or newer layout: the runs list has its own route
        browser.get(f"{server}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
        parent = wait.until(EC.visibility_of_element_located((By.XPATH, _text_link(parent_name))))
    _click_if_present(browser, "//button[@aria-label='Close' and ancestor::*[contains(., "
                               "'MLflow Assistant')]]")  # the assistant side panel hides the table
    # 2. the trials are nested under the parent: expand it when the UI collapsed them
    if not browser.find_elements(By.XPATH, _text_link(trial_names[0])):
        cell = parent.find_element(By.XPATH, "./ancestor::*[.//button][1]")
        browser.execute_script("arguments[0].click()", cell.find_element(By.TAG_NAME, "button"))
    for name in trial_names:
        wait.until(EC.visibility_of_element_located((By.XPATH, _text_link(name))))
    shot_runs = tmp_path / "experiment_runs.png"
    browser.save_screenshot(str(shot_runs))

    # 3. open the best trial's run, its model metrics, and look for the val_acc chart
    link = browser.find_element(By.XPATH, _text_link(f"trial-{best.trial_id}"))
    browser.execute_script("arguments[0].click()", link)
    wait.until(EC.url_contains("/runs/"))
    run_id = browser.current_url.split("/runs/")[1].split("/")[0].split("?")[0]
    assert client.get_run(run_id).data.tags["tfkd.trial_id"] == best.trial_id
    if not _click_if_present(browser, "//*[@role='tab' and normalize-space(.)='Model metrics']"):
        browser.get(f"{server}/#/experiments/{exp.experiment_id}/runs/{run_id}/model-metrics")
    search_box = wait.until(EC.visibility_of_element_located(
        (By.XPATH, "//input[contains(@placeholder, 'Search metric')]")))
    search_box.send_keys("val_acc")  # charts are virtualised: show this one only

    def val_acc_chart(driver):
        for title in driver.find_elements(By.XPATH, "//*[normalize-space(text())='val_acc']"):
            card = title.find_elements(By.XPATH, "./ancestor::div[.//*[contains(@class, "
                                                 "'js-plotly-plot') or self::canvas]][1]")
            if card:
                lines = card[0].find_elements(By.CSS_SELECTOR, "path.js-line, canvas")
                if any(el.tag_name == "canvas" or len(el.get_attribute("d") or "") > 10
                       for el in lines):
                    return card[0]
        return False

    card = wait.until(val_acc_chart)
    assert card.find_elements(By.CSS_SELECTOR, "svg.main-svg, canvas")
    assert f"trial-{best.trial_id}" in card.text  # the chart's legend names the run
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
    shot_chart = tmp_path / "trial_val_acc.png"
    browser.save_screenshot(str(shot_chart))
    for shot in (shot_runs, shot_chart):
        assert shot.stat().st_size > 10_000
    print(f"screenshots: {shot_runs} {shot_chart}")

"""The app in a real browser, as a visitor meets it: Debian's Chromium driven by Playwright at 1280 x 900 and
390 x 844. Screenshots of every tab at both sizes go to tests/screenshots/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from ssad.hub import WEIGHTS_DIR, embedded_models
from ssad.methods import METHODS

from conftest import serve_app

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
BOTTLE = Path(__file__).resolve().parents[1] / "examples" / "mvtec" / "bottle" / "broken_large_000.png"
TABS = ("Detect", "Compare", "Leaderboard", "Train", "About")
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}

pytestmark = pytest.mark.slow

EMBEDDED_BOTTLE = [method for method, model in embedded_models() if model == "mvtec/bottle" and method in METHODS]


@pytest.fixture(scope="module")
def browser_app_url(tiny_weights, tmp_path_factory):
    """The app with the embedded weights when ``weights/`` has a bottle model (what users see), else the tiny ones."""
    process, url = serve_app(None if EMBEDDED_BOTTLE else tiny_weights, tmp_path_factory.mktemp("browser") / "app.log")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )
        yield browser
        browser.close()


def open_page(browser, url: str, size: str):
    width, height = SIZES[size]
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("#detect-button", timeout=60_000)
    return page


def upload_and_detect(page, path: Path) -> float:
    """Upload ``path``, tap Detect and wait for the verdict; returns the seconds from the tap to the verdict."""
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.wait_for_function(  # the upload's own preview, served back by the app: the file is on the server
        "name => [...document.querySelectorAll('#detect-image img')].some(img => img.src.includes(name) && img.naturalWidth)",
        arg=path.name, timeout=60_000)
    page.evaluate("document.querySelectorAll('#verdict .verdict').forEach(card => card.remove())")  # wait for a new one
    started = time.perf_counter()
    page.click("#detect-button")
    page.locator("#verdict .verdict").wait_for(timeout=60_000)
    return time.perf_counter() - started


def output_image_sizes(page) -> list[tuple[int, int]]:
    """Natural sizes of the pictures the app sent for a detection."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#heatmap img, #mask img, #animation img, #frame img')]
            .filter(img => img.complete && img.naturalWidth).map(img => [img.naturalWidth, img.naturalHeight])"""
    )


def test_a_6000_px_phone_photo_gets_its_verdict_at_display_size_in_seconds(browser, browser_app_url, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.open(BOTTLE).convert("RGB").resize((6000, 4000), Image.BILINEAR).save(photo, quality=90)
    page = open_page(browser, browser_app_url, "desktop")
    upload_and_detect(page, BOTTLE)  # warm-up: the first call loads the model
    small = upload_and_detect(page, BOTTLE.with_name("good_000.png"))
    download = page.locator("#download a[download]").first.get_attribute("download", timeout=60_000)
    seconds = upload_and_detect(page, photo)
    page.locator("#animation img").wait_for(timeout=30_000)
    print(f"6000 x 4000 JPEG: verdict {seconds:.2f} s after the click; a 256 x 256 image {small:.2f} s")
    # 57 s when every picture came back at full size. The target is 5 s (2.7-3.8 s here on idle cores); on busy
    # cores both times grow, so the photo is held to its cost over a small image's in the same run.
    assert seconds <= 5.0 or seconds <= 2.0 * small
    sizes = output_image_sizes(page)
    assert sizes and max(max(size) for size in sizes) <= 1024 + 256, sizes  # + the colour bar beside the heat map
    page.wait_for_function(  # then the full-resolution map, as a file to download
        "previous => [...document.querySelectorAll('#download a[download]')].some(a => a.download.startsWith('heatmap') && a.download !== previous)",
        arg=download, timeout=60_000)
    page.close()


@pytest.mark.parametrize("size", list(SIZES))
def test_every_tab_reachable_and_the_verdict_in_view_after_detect(browser, browser_app_url, size):
    SCREENSHOTS.mkdir(exist_ok=True)
    page = open_page(browser, browser_app_url, size)
    for name in TABS:  # every tab is a visible button: no overflow menu
        assert page.get_by_role("tab", name=name).is_visible(), name
    upload_and_detect(page, BOTTLE)
    page.locator("#animation img").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    box = page.locator("#verdict").bounding_box()
    _, height = SIZES[size]
    assert -2 <= box["y"] < height and box["y"] + min(box["height"], 80) <= height, box
    assert page.locator("#label input, #label textarea").input_value() in ("normal", "anomalous")
    page.screenshot(path=str(SCREENSHOTS / f"{size}-detect.png"))
    page.screenshot(path=str(SCREENSHOTS / f"{size}-detect-full.png"), full_page=True)
    for name in TABS[1:]:
        page.get_by_role("tab", name=name).click()
        if name == "Leaderboard":
            page.wait_for_selector("#leaderboard-bars .js-plotly-plot", timeout=30_000)
            assert "reported" in page.locator("#leaderboard-table").inner_text()
        page.wait_for_timeout(800)
        page.screenshot(path=str(SCREENSHOTS / f"{size}-{name.lower()}.png"), full_page=True)
    page.close()


def test_the_model_list_offers_only_models_with_weights(browser, browser_app_url):
    page = open_page(browser, browser_app_url, "desktop")
    page.get_by_label("Model (dataset/category)").first.click()
    offered = page.locator("ul[role=listbox] li").all_inner_texts()
    models = {model for _, model in embedded_models()} if EMBEDDED_BOTTLE else {"mvtec/bottle"}
    assert offered and {text.replace('✓', '').strip() for text in offered} <= models
    page.close()


@pytest.mark.skipif(not EMBEDDED_BOTTLE, reason=f"no embedded mvtec/bottle weights in {WEIGHTS_DIR}")
@pytest.mark.parametrize("method_id", EMBEDDED_BOTTLE)
def test_detect_answers_within_three_seconds_with_the_embedded_weights(browser_app_url, method_id):
    """The latency target: a /detect call on a bottle test image, round trip, median of 3 after a warm-up."""
    import statistics

    from gradio_client import Client, handle_file

    client = Client(browser_app_url, verbose=False)
    name = METHODS[method_id].display_name
    client.predict(handle_file(BOTTLE), name, "mvtec/bottle", api_name="/detect")
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        client.predict(handle_file(BOTTLE), name, "mvtec/bottle", api_name="/detect")
        seconds.append(time.perf_counter() - started)
    print(f"{name}: /detect round trip {[round(s, 2) for s in seconds]} s")
    assert statistics.median(seconds) < 3.0  # SSM measured 2.3 s after the app rework (27 network passes, GIF and pictures)

"""Headless Chromium from Debian (``chromium``, ``chromium-driver``), driven by Selenium.

Selenium blocks; every call runs in a thread of its own so that the test's event loop (and the
loopback receiver on it) keeps running while the browser works. Selenium Manager is kept
offline: the browser and the driver are the Debian packages, never a download.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)

T = TypeVar("T")


def start_chromium(profile_dir: Path) -> webdriver.Chrome:
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


class Browser:
    """One Chromium, used from async tests."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="selenium")

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def close(self) -> None:
        await self._run(self.driver.quit)
        self._thread.shutdown()

    async def open(self, url: str) -> None:
        await self._run(lambda: self.driver.get(url))

    async def forget_cookies(self) -> None:
        """As a browser that was closed: no session any more."""
        await self._run(self.driver.delete_all_cookies)

    async def path(self) -> str:
        url = await self._run(lambda: self.driver.current_url)
        return "/" + url.split("/", 3)[3]

    async def text(self, css: str = "body") -> str:
        return await self._run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def fill(self, field_id: str, value: str) -> None:
        def fill() -> None:
            element = self.driver.find_element(By.ID, field_id)
            element.clear()
            element.send_keys(value)

        await self._run(fill)

    async def press(self, label: str) -> None:
        """Click the button or link with that text, and wait for the next page."""

        def press() -> None:
            found = self._control(label)
            found.click()
            WebDriverWait(self.driver, 10).until(lambda _: _stale(found))

        await self._run(press)

    def _control(self, label: str) -> WebElement:
        for element in self.driver.find_elements(By.CSS_SELECTOR, "button, a"):
            if element.text.strip() == label:
                return element
        page = self.driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"no button or link {label!r} on {self.driver.current_url}:\n{page}")

    async def run_script(self, script: str) -> None:
        await self._run(lambda: self.driver.execute_script(script))

    async def wait_for_text(self, css: str, wanted: str, timeout_s: float = 30.0) -> str:
        """Wait until the element's text holds ``wanted`` (live refresh updates it)."""

        def wait() -> str:
            def holds(_: object) -> str | bool:
                try:
                    found: str = self.driver.find_element(By.CSS_SELECTOR, css).text
                except StaleElementReferenceException:
                    return False
                return found if wanted in found else False

            result = WebDriverWait(self.driver, timeout_s, poll_frequency=0.3).until(holds)
            return str(result)

        return await self._run(wait)

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self._run(lambda: self.driver.save_screenshot(str(path)))


def _stale(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        # Chromium's answer while the old page is being replaced (a fetch of the page in flight
        # makes this more likely): the element is gone all the same.
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False
